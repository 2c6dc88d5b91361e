import Foundation
import GedsFuzzTargets
@_spi(Fuzzing) import GedsVerbs
import GedsWire
import Testing

/// Every input kept under Tests/FuzzCorpus/TARGET (what `tools/fuzz.sh` found crashing once, and the
/// interesting inputs kept from its runs) goes through its decoder again: none may trap.
@Suite struct FuzzCorpusTests {
    static let corpusRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("FuzzCorpus")

    @Test(arguments: FuzzTarget.allCases)
    func keptInputsAndSeedsDecodeWithoutTrapping(_ target: FuzzTarget) throws {
        let folder = Self.corpusRoot.appendingPathComponent(target.rawValue)
        let files = (try? FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)) ?? []
        let inputs = try files.map { try [UInt8](Data(contentsOf: $0)) } + target.seeds
        for input in inputs {
            input.withUnsafeBytes { target.run($0) }
        }
        #expect(inputs.count >= target.seeds.count)
        #expect(!target.seeds.isEmpty)
    }

    @Test func codecSeedsAreFramesTheDecoderAccepts() {
        for seed in FuzzTarget.codec.seeds {
            let request = try? WholeFrame.request(from: seed)
            let reply = try? WholeFrame.reply(from: seed)
            #expect((request != nil) != (reply != nil))
        }
    }
}

@Suite struct MessageAssemblerTests {
    private func append(_ assembler: inout MessageAssembler, flags: UInt8, total: Int, _ bytes: [UInt8]) -> Result<[UInt8]?, RDMAError> {
        bytes.withUnsafeBytes { payload in
            do throws(RDMAError) { return .success(try assembler.append(flags: flags, total: total, payload: payload)) } catch {
                return .failure(error)
            }
        }
    }

    @Test func joinsFragmentsIntoTheAnnouncedMessage() throws {
        var assembler = MessageAssembler(maxMessageSize: 100)
        #expect(try append(&assembler, flags: 1, total: 5, [1, 2]).get() == nil)
        #expect(try append(&assembler, flags: 0, total: 5, [3]).get() == nil)
        #expect(try append(&assembler, flags: 2, total: 5, [4, 5]).get() == [1, 2, 3, 4, 5])
        #expect(try append(&assembler, flags: 3, total: 0, []).get() == [])
    }

    @Test func refusesEveryBrokenSequenceAndStartsOverAfterIt() throws {
        var assembler = MessageAssembler(maxMessageSize: 4)
        let cases: [(first: (UInt8, Int, [UInt8]), second: (UInt8, Int, [UInt8])?, message: String)] = [
            ((0, 3, [1]), nil, "a continuation fragment without a message"),
            ((1, 5, [1]), nil, "a message of 5 bytes exceeds the limit of 4"),
            ((1, 2, [1, 2, 3]), nil, "a message is longer than its announced 2 bytes"),
            ((1, 3, [1]), (2, 3, [2]), "a message ended after 2 of 3 bytes"),
            ((1, 3, [1]), (1, 3, [2]), "a new message began inside another"),
        ]
        for (first, second, message) in cases {
            var result = append(&assembler, flags: first.0, total: first.1, first.2)
            if let second, case .success = result { result = append(&assembler, flags: second.0, total: second.1, second.2) }
            guard case .failure(let error) = result else {
                Issue.record("accepted: \(message)")
                continue
            }
            #expect(error.kind == .protocolViolation)
            #expect(error.message == message)
            #expect(try append(&assembler, flags: 3, total: 1, [9]).get() == [9])
        }
    }
}

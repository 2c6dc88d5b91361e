import SystemPackage

/// The bytes of a small file (a token, a configuration): to its end, or until more than `limit` bytes are in (the
/// caller decides what a longer file means). The messages are those of `GedsError.io` on each failure.
public func readSmallFile(_ path: String, limit: Int, cannotOpen: @autoclosure () -> String,
                          cannotRead: @autoclosure () -> String) throws(GedsError) -> [UInt8] {
    let descriptor: FileDescriptor
    do {
        descriptor = try FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec)
    } catch {
        throw GedsError.io(cannotOpen(), error)
    }
    defer { try? descriptor.close() }
    var contents: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while contents.count <= limit {
        let got: Int
        do {
            got = try chunk.withUnsafeMutableBytes { try descriptor.read(into: $0) }
        } catch {
            throw GedsError.io(cannotRead(), error)
        }
        if got == 0 { break }
        contents += chunk[..<got]
    }
    return contents
}

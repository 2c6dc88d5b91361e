import SystemPackage

/// Writes all of `bytes` to a file (short writes and interruptions retried).
public func writeAll(_ descriptor: FileDescriptor, _ bytes: UnsafeRawBufferPointer) throws(GedsError) {
    do {
        _ = try descriptor.writeAll(bytes)
    } catch {
        throw GedsError.io("write failed", error)
    }
}

/// One line to standard error, unbuffered: how every tool reports a failure.
public func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { try? writeAll(.standardError, UnsafeRawBufferPointer($0)) }
}

/// One line to standard output, unbuffered, so that scripts waiting for it see it at once.
public func printLine(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { try? writeAll(.standardOutput, UnsafeRawBufferPointer($0)) }
}

/// Sizes as people write them on command lines: `4096`, `64K`, `512MiB`, `4GiB`, `1T` (all binary: K = 2^10).
public enum ByteCount {
    public static func parse(_ text: String) throws(GedsError) -> UInt64 {
        var digits = Substring(text)
        for suffix in ["iB", "B"] where digits.hasSuffix(suffix) {
            digits = digits.dropLast(suffix.count)
            break
        }
        let shifts: [Character: UInt64] = ["K": 10, "M": 20, "G": 30, "T": 40]
        var shift: UInt64 = 0
        if let last = digits.last, let found = shifts[Character(last.uppercased())] {
            shift = found
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw GedsError(.invalidArgument, "bad size '\(text)' (expected a count of bytes, e.g. 4096, 64K, 512MiB, 4GiB)")
        }
        guard let value = UInt64(digits), value <= UInt64.max >> shift else {
            throw GedsError(.invalidArgument, "size '\(text)' is too large")
        }
        return value << shift
    }
}

/// A 32-bit value (a CRC-32C) as 8 hex digits, as logs and error messages show checksums.
public func hex32(_ value: UInt32) -> String {
    let text = String(value, radix: 16)
    return String(repeating: "0", count: 8 - text.count) + text
}

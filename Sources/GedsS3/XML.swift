import GedsCore

/// A minimal XML reader for S3's answers (ListBucketResult, InitiateMultipartUploadResult, Error, …): elements,
/// their text and children; attributes, namespaces (prefixes are dropped), comments, processing instructions
/// and DOCTYPE are skipped; CDATA and the predefined and numeric entities are decoded. Not a validating parser:
/// it accepts what S3-compatible servers send and throws on what it cannot make sense of.
@_spi(Testing) public struct XMLTree: Sendable, Equatable {
    public var name: String
    public var text: String = ""
    public var children: [XMLTree] = []

    public func child(_ name: String) -> XMLTree? { children.first { $0.name == name } }
    public func children(_ name: String) -> [XMLTree] { children.filter { $0.name == name } }
    /// The text of the first child called `name`.
    public subscript(_ name: String) -> String? { child(name)?.text }

    static let maxDepth = 64

    public static func parse(_ bytes: [UInt8]) throws(GedsError) -> XMLTree {
        var stack: [XMLTree] = []
        var root: XMLTree?
        var index = 0
        let count = bytes.count

        func fail(_ what: String) -> GedsError {
            GedsError(.protocolViolation, "malformed XML from the S3 server: \(what) at byte \(index)")
        }
        func find(_ pattern: [UInt8], from start: Int) -> Int? {
            guard pattern.count <= count else { return nil }
            var position = start
            while position + pattern.count <= count {
                if bytes[position] == pattern[0] && Array(bytes[position..<position + pattern.count]) == pattern {
                    return position
                }
                position += 1
            }
            return nil
        }
        func localName(_ raw: ArraySlice<UInt8>) -> String {
            let name = String(decoding: raw, as: UTF8.self)
            if let colon = name.lastIndex(of: ":") { return String(name[name.index(after: colon)...]) }
            return name
        }

        while index < count {
            if bytes[index] != UInt8(ascii: "<") {
                let end = bytes[index...].firstIndex(of: UInt8(ascii: "<")) ?? count
                if !stack.isEmpty {
                    stack[stack.count - 1].text += try decodeEntities(bytes[index..<end])
                } else if bytes[index..<end].contains(where: { !($0 == 32 || $0 == 9 || $0 == 10 || $0 == 13) }) {
                    throw fail("text outside the root element")
                }
                index = end
                continue
            }
            // Markup.
            if bytes[index...].starts(with: Array("<?".utf8)) {
                guard let end = find(Array("?>".utf8), from: index + 2) else { throw fail("unterminated <?") }
                index = end + 2
            } else if bytes[index...].starts(with: Array("<!--".utf8)) {
                guard let end = find(Array("-->".utf8), from: index + 4) else { throw fail("unterminated comment") }
                index = end + 3
            } else if bytes[index...].starts(with: Array("<![CDATA[".utf8)) {
                guard let end = find(Array("]]>".utf8), from: index + 9) else { throw fail("unterminated CDATA") }
                guard !stack.isEmpty else { throw fail("CDATA outside the root element") }
                stack[stack.count - 1].text += String(decoding: bytes[(index + 9)..<end], as: UTF8.self)
                index = end + 3
            } else if bytes[index...].starts(with: Array("<!".utf8)) {
                guard let end = bytes[index...].firstIndex(of: UInt8(ascii: ">")) else { throw fail("unterminated <!") }
                index = end + 1
            } else if index + 1 < count, bytes[index + 1] == UInt8(ascii: "/") {
                guard let end = bytes[index...].firstIndex(of: UInt8(ascii: ">")) else { throw fail("unterminated end tag") }
                let name = localName(bytes[(index + 2)..<end].prefix { !isSpace($0) })
                guard let element = stack.popLast(), element.name == name else {
                    throw fail("unexpected end tag </\(name)>")
                }
                if stack.isEmpty {
                    guard root == nil else { throw fail("a second root element") }
                    root = element
                } else {
                    stack[stack.count - 1].children.append(element)
                }
                index = end + 1
            } else {
                // Start tag: the name, then attributes (skipped, honouring quotes), then > or />.
                var position = index + 1
                while position < count, !isSpace(bytes[position]), bytes[position] != UInt8(ascii: ">"),
                      bytes[position] != UInt8(ascii: "/") { position += 1 }
                let name = localName(bytes[(index + 1)..<position])
                guard !name.isEmpty else { throw fail("empty element name") }
                var quote: UInt8? = nil
                while position < count {
                    let byte = bytes[position]
                    if let open = quote {
                        if byte == open { quote = nil }
                    } else if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'") {
                        quote = byte
                    } else if byte == UInt8(ascii: ">") {
                        break
                    }
                    position += 1
                }
                guard position < count else { throw fail("unterminated start tag <\(name)") }
                let selfClosing = bytes[position - 1] == UInt8(ascii: "/")
                if root != nil { throw fail("a second root element") }
                if selfClosing {
                    if stack.isEmpty { root = XMLTree(name: name) } else {
                        stack[stack.count - 1].children.append(XMLTree(name: name))
                    }
                } else {
                    guard stack.count < maxDepth else { throw fail("elements nested too deep") }
                    stack.append(XMLTree(name: name))
                }
                index = position + 1
            }
        }
        guard stack.isEmpty else { throw fail("unclosed element <\(stack.last!.name)>") }
        guard let root else { throw fail("no element") }
        return root
    }

    private static func isSpace(_ byte: UInt8) -> Bool { byte == 32 || byte == 9 || byte == 10 || byte == 13 }

    static func decodeEntities(_ raw: ArraySlice<UInt8>) throws(GedsError) -> String {
        guard raw.contains(UInt8(ascii: "&")) else { return String(decoding: raw, as: UTF8.self) }
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var index = raw.startIndex
        while index < raw.endIndex {
            let byte = raw[index]
            guard byte == UInt8(ascii: "&") else {
                out.append(byte)
                index += 1
                continue
            }
            guard let semicolon = raw[index...].prefix(12).firstIndex(of: UInt8(ascii: ";")) else {
                throw GedsError(.protocolViolation, "malformed XML from the S3 server: a bare '&'")
            }
            let entity = String(decoding: raw[(index + 1)..<semicolon], as: UTF8.self)
            switch entity {
            case "amp": out.append(UInt8(ascii: "&"))
            case "lt": out.append(UInt8(ascii: "<"))
            case "gt": out.append(UInt8(ascii: ">"))
            case "quot": out.append(UInt8(ascii: "\""))
            case "apos": out.append(UInt8(ascii: "'"))
            default:
                var scalarValue: UInt32?
                if entity.hasPrefix("#x") || entity.hasPrefix("#X") {
                    scalarValue = UInt32(entity.dropFirst(2), radix: 16)
                } else if entity.hasPrefix("#") {
                    scalarValue = UInt32(entity.dropFirst(1))
                }
                guard let value = scalarValue, let scalar = Unicode.Scalar(value) else {
                    throw GedsError(.protocolViolation, "malformed XML from the S3 server: unknown entity &\(entity);")
                }
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            }
            index = semicolon + 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Escapes text for an XML element's content.
@_spi(Testing) public func xmlEscape(_ text: String) -> String {
    var result = ""
    result.reserveCapacity(text.utf8.count)
    for character in text {
        switch character {
        case "&": result += "&amp;"
        case "<": result += "&lt;"
        case ">": result += "&gt;"
        case "\"": result += "&quot;"
        case "'": result += "&apos;"
        default: result.append(character)
        }
    }
    return result
}

/// A message split as DKIM sees it (RFC 6376 §3.4, RFC 5322 §2.2): header
/// fields, each with its exact bytes, and the body. Input is in CRLF form.
public struct DKIMMessage: Sendable {
    public struct Field: Sendable, Equatable {
        /// The name as written (before the colon, without trailing WSP).
        public var name: String
        /// The whole field as it came, folds included, without the final
        /// CRLF.
        public var source: [UInt8]
        /// Everything after the colon.
        public var value: [UInt8] {
            guard let colon = source.firstIndex(of: UInt8(ascii: ":")) else { return [] }
            return Array(source[(colon + 1)...])
        }
    }

    public var fields: [Field]
    public var body: [UInt8]

    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// Splits a CRLF message. A header block ends at the first empty line
    /// (no body without one). Errors in chasquid's words.
    public init(crlf bytes: [UInt8]) throws(Invalid) {
        fields = []
        body = []
        var index = 0
        let count = bytes.count
        var current: [UInt8]?
        func finish() throws(Invalid) {
            guard let field = current else { return }
            guard let colon = field.firstIndex(of: UInt8(ascii: ":")) else {
                throw Invalid(description: "invalid header: missing ':'")
            }
            var nameEnd = colon
            while nameEnd > 0, field[nameEnd - 1] == 0x20 || field[nameEnd - 1] == 0x09 { nameEnd -= 1 }
            fields.append(Field(name: String(decoding: field[..<nameEnd], as: UTF8.self), source: field))
            current = nil
        }
        while index < count {
            // One line, without its CRLF (a bare LF also ends a line).
            var end = index
            while end < count, bytes[end] != 0x0A { end += 1 }
            var lineEnd = end
            if lineEnd > index, bytes[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            let line = bytes[index..<lineEnd]
            let next = min(end + 1, count)
            if line.isEmpty {
                try finish()
                body = Array(bytes[next...])
                return
            }
            if line.first == 0x20 || line.first == 0x09 {
                guard current != nil else { throw Invalid(description: "invalid header: bad continuation") }
                current!.append(contentsOf: [0x0D, 0x0A])
                current!.append(contentsOf: line)
            } else {
                try finish()
                current = Array(line)
            }
            index = next
        }
        try finish()
    }

    /// The fields named `name` (case-insensitive), last first: the order in
    /// which h= picks them (RFC 6376 §5.4.2).
    func bottomUp(_ name: String) -> [Int] {
        let lower = name.lowercased()
        return fields.indices.reversed().filter { fields[$0].name.lowercased() == lower }
    }

    /// The fields h= selects, in h= order: each name takes the next instance
    /// from the bottom not yet taken; a name with none left selects nothing.
    /// `excluding` is the signature field itself, which never signs itself
    /// (RFC 6376 §3.7). One index of the fields by name, so a long h= over
    /// many fields costs linear time.
    func selected(byNames names: [String], excluding: Int? = nil) -> [Field] {
        var byName: [String: [Int]] = [:]
        for index in fields.indices.reversed() where index != excluding {
            byName[fields[index].name.lowercased(), default: []].append(index)
        }
        var taken: [String: Int] = [:]
        var out: [Field] = []
        for name in names {
            let lower = name.lowercased()
            guard let instances = byName[lower] else { continue }
            let next = taken[lower, default: 0]
            guard next < instances.count else { continue }
            taken[lower] = next + 1
            out.append(fields[instances[next]])
        }
        return out
    }
}

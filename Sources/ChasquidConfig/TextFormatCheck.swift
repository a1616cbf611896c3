/// A schema check over protobuf text format that knows where things are.
///
/// swift-protobuf decodes the file, but its errors carry no position. This
/// pass runs first, over the same text, and reports the first problem with
/// its line and field name, so an admin reads `line 7: field "x": …` rather
/// than "malformed text". It also records the line of each field, for the
/// semantic checks done after decoding.
struct TextFormatCheck {
    enum FieldKind: Equatable {
        case string, optionalString, repeatedString, int64, uint32, bool

        var typeName: String {
            switch self {
            case .string, .optionalString: "string"
            case .repeatedString: "repeated string"
            case .int64: "int64"
            case .uint32: "uint32"
            case .bool: "bool"
            }
        }
    }

    struct Problem: Error, Equatable {
        var line: Int
        var field: String?
        var message: String
    }

    let schema: [String: FieldKind]

    /// Checks `text`; returns the first line of each field seen.
    func check(_ text: String) throws(Problem) -> [String: Int] {
        var scanner = Scanner(text)
        var lines: [String: Int] = [:]
        while let token = try scanner.next() {
            guard case .identifier(let name) = token.kind else {
                throw Problem(line: token.line, field: nil, message: "expected a field name, found \(token.kind)")
            }
            guard let kind = schema[name] else {
                throw Problem(line: token.line, field: name, message: "unknown field")
            }
            if lines[name] != nil && kind != .repeatedString {
                throw Problem(line: token.line, field: name, message: "field set more than once")
            }
            lines[name] = lines[name] ?? token.line
            guard let separator = try scanner.next(), case .punctuation(":") = separator.kind else {
                throw Problem(line: token.line, field: name, message: "expected ':' after the field name, found a \(kind.typeName) field used as a message")
            }
            try checkValue(&scanner, name: name, kind: kind, line: token.line)
            // An optional ';' or ',' may end a field.
            if let peeked = try scanner.peek(), case .punctuation(let p) = peeked.kind, p == ";" || p == "," {
                _ = try scanner.next()
            }
        }
        return lines
    }

    private func checkValue(_ scanner: inout Scanner, name: String, kind: FieldKind, line: Int) throws(Problem) {
        guard let value = try scanner.next() else {
            throw Problem(line: line, field: name, message: "missing value")
        }
        if case .punctuation("[") = value.kind {
            guard kind == .repeatedString else {
                throw Problem(line: value.line, field: name, message: "a list is only valid for a repeated field; this field is \(kind.typeName)")
            }
            if let close = try scanner.peek(), case .punctuation("]") = close.kind {
                _ = try scanner.next()
                return
            }
            while true {
                try checkScalar(&scanner, name: name, kind: kind, line: value.line)
                guard let next = try scanner.next() else {
                    throw Problem(line: value.line, field: name, message: "unterminated list")
                }
                if case .punctuation("]") = next.kind { return }
                guard case .punctuation(",") = next.kind else {
                    throw Problem(line: next.line, field: name, message: "expected ',' or ']' in list")
                }
            }
        }
        scanner.pushBack(value)
        try checkScalar(&scanner, name: name, kind: kind, line: line)
    }

    private func checkScalar(_ scanner: inout Scanner, name: String, kind: FieldKind, line: Int) throws(Problem) {
        guard let value = try scanner.next() else {
            throw Problem(line: line, field: name, message: "missing value")
        }
        let wrongType = Problem(line: value.line, field: name, message: "expected a \(kind.typeName) value, found \(value.kind)")
        switch kind {
        case .string, .optionalString, .repeatedString:
            guard case .string = value.kind else { throw wrongType }
            // Adjacent strings are concatenated.
            while let more = try scanner.peek(), case .string = more.kind { _ = try scanner.next() }
        case .int64, .uint32:
            var text: String
            switch value.kind {
            case .number(let n): text = n
            case .punctuation("-"):
                guard let digits = try scanner.next(), case .number(let n) = digits.kind else { throw wrongType }
                text = "-" + n
            default: throw wrongType
            }
            guard let parsed = Self.parseInteger(text) else {
                throw Problem(line: value.line, field: name, message: "expected an integer, found \(text)")
            }
            let range: ClosedRange<Int64> = kind == .uint32 ? 0...Int64(UInt32.max) : Int64.min...Int64.max
            guard range.contains(parsed) else {
                throw Problem(line: value.line, field: name, message: "value \(text) is out of range for \(kind.typeName)")
            }
        case .bool:
            switch value.kind {
            case .identifier(let b) where ["true", "false", "True", "False", "t", "f"].contains(b): break
            case .number(let n) where n == "0" || n == "1": break
            default: throw wrongType
            }
        }
    }

    /// Decimal, hex (0x) or octal (leading 0) integers, as the text format allows.
    static func parseInteger(_ text: String) -> Int64? {
        var digits = Substring(text)
        let negative = digits.hasPrefix("-")
        if negative { digits = digits.dropFirst() }
        let magnitude: UInt64?
        if digits.hasPrefix("0x") || digits.hasPrefix("0X") {
            magnitude = UInt64(digits.dropFirst(2), radix: 16)
        } else if digits.count > 1 && digits.hasPrefix("0") {
            magnitude = UInt64(digits.dropFirst(), radix: 8)
        } else {
            magnitude = UInt64(digits, radix: 10)
        }
        guard let magnitude else { return nil }
        if negative {
            return magnitude <= UInt64(Int64.max) + 1 ? Int64(truncatingIfNeeded: 0 &- magnitude) : nil
        }
        return magnitude <= UInt64(Int64.max) ? Int64(magnitude) : nil
    }
}

/// Tokens of protobuf text format, with their line numbers.
struct Scanner {
    enum Kind: Equatable, CustomStringConvertible {
        case identifier(String)
        case number(String)
        case string
        case punctuation(Character)

        var description: String {
            switch self {
            case .identifier(let s): "\"\(s)\""
            case .number(let s): "number \(s)"
            case .string: "a string"
            case .punctuation(let c): "'\(c)'"
            }
        }
    }

    struct Token: Equatable {
        var kind: Kind
        var line: Int
    }

    private let scalars: [Unicode.Scalar]
    private var position = 0
    private var line = 1
    private var pushedBack: [Token] = []

    init(_ text: String) { scalars = Array(text.unicodeScalars) }

    mutating func pushBack(_ token: Token) { pushedBack.append(token) }

    mutating func peek() throws(TextFormatCheck.Problem) -> Token? {
        guard let token = try next() else { return nil }
        pushedBack.append(token)
        return token
    }

    mutating func next() throws(TextFormatCheck.Problem) -> Token? {
        if let token = pushedBack.popLast() { return token }
        skipSpaceAndComments()
        guard position < scalars.count else { return nil }
        let c = scalars[position]
        let startLine = line
        if c == "\"" || c == "'" {
            try skipString(quote: c)
            return Token(kind: .string, line: startLine)
        }
        if c.properties.isAlphabetic && c.isASCII || c == "_" {
            let word = take { $0.isASCII && ($0.properties.isAlphabetic || $0 == "_" || ("0"..."9").contains($0)) }
            return Token(kind: .identifier(word), line: startLine)
        }
        if ("0"..."9").contains(c) || c == "." {
            let number = take { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "." || $0 == "+") }
            return Token(kind: .number(number), line: startLine)
        }
        position += 1
        return Token(kind: .punctuation(Character(c)), line: startLine)
    }

    private mutating func take(while predicate: (Unicode.Scalar) -> Bool) -> String {
        var result = String.UnicodeScalarView()
        while position < scalars.count && predicate(scalars[position]) {
            result.append(scalars[position])
            position += 1
        }
        return String(result)
    }

    private mutating func skipSpaceAndComments() {
        while position < scalars.count {
            let c = scalars[position]
            if c == "\n" {
                line += 1
                position += 1
            } else if c == " " || c == "\t" || c == "\r" || c == "\u{0B}" || c == "\u{0C}" {
                position += 1
            } else if c == "#" {
                while position < scalars.count && scalars[position] != "\n" { position += 1 }
            } else {
                return
            }
        }
    }

    private mutating func skipString(quote: Unicode.Scalar) throws(TextFormatCheck.Problem) {
        let startLine = line
        position += 1
        while position < scalars.count {
            let c = scalars[position]
            if c == "\n" { break }
            position += 1
            if c == "\\" {
                position += 1
            } else if c == quote {
                return
            }
        }
        throw TextFormatCheck.Problem(line: startLine, field: nil, message: "unterminated string")
    }
}

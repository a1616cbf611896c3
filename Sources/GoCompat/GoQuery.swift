/// Go's `url.QueryEscape` and `url.QueryUnescape`: the escaping of the local
/// RPC's form values and of domaininfo file names (`s:<escaped domain>`).
public enum GoQuery {
    public struct Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
    }

    private static let hexDigits = Array("0123456789ABCDEF".unicodeScalars)

    /// Bytes outside `[A-Za-z0-9-_.~]` become `%XX` (uppercase), and space becomes `+`.
    public static func escape(_ text: String) -> String {
        var result = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                UInt8(ascii: "~"):
                result.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: " "):
                result += "+"
            default:
                result += "%"
                result.unicodeScalars.append(hexDigits[Int(byte >> 4)])
                result.unicodeScalars.append(hexDigits[Int(byte & 0xF)])
            }
        }
        return result
    }

    /// The inverse of `escape`; refuses a broken `%` escape and bytes that are not UTF-8.
    public static func unescape(_ text: some StringProtocol) throws(Error) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"):
                bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    throw Error(description: "invalid URL escape in \"\(text)\"")
                }
                bytes.append(high << 4 | low)
            default:
                bytes.append(byte)
            }
        }
        guard let result = String(validating: bytes, as: UTF8.self) else {
            throw Error(description: "invalid UTF-8 in \"\(text)\"")
        }
        return result
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

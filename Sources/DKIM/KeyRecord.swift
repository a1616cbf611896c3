#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A DKIM tag list (RFC 6376 §3.2):
///
///     tag-list  =  tag-spec *( ";" tag-spec ) [ ";" ]
///     tag-spec  =  [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
///     tag-name  =  ALPHA *ALNUMPUNC
///     tag-value =  [ tval *( 1*(WSP / FWS) tval ) ]
///
/// Tags are case-sensitive; a duplicated tag makes the whole list invalid.
public struct DKIMTagList: Sendable, Equatable {
    public var tags: [(name: String, value: String)]

    public static func == (a: DKIMTagList, b: DKIMTagList) -> Bool {
        a.tags.elementsEqual(b.tags) { $0.name == $1.name && $0.value == $1.value }
    }

    public subscript(name: String) -> String? { tags.first { $0.name == name }?.value }

    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// The most tags a list may have: RFC 6376 defines fewer than twenty,
    /// and a cap keeps a hostile field from costing much.
    public static let maximumTags = 64

    public init(parsing text: String) throws(Invalid) {
        tags = []
        var seen = Set<String>()
        // Split on the ";" byte, never on grapheme clusters: a ";" next to
        // a combining mark is still a separator.
        let specs = Array(text.utf8).split(separator: UInt8(ascii: ";"), omittingEmptySubsequences: false)
        guard specs.count <= Self.maximumTags + 1 else { throw Invalid(description: "invalid tag: too many tags") }
        for (index, specBytes) in specs.enumerated() {
            let spec = String(decoding: specBytes, as: UTF8.self)
            let trimmed = spec.trimmingFWS()
            // The list may end with ";" (the last spec is then empty).
            if trimmed.isEmpty, index == specs.count - 1 { continue }
            guard let equals = trimmed.firstIndex(of: "=") else {
                throw Invalid(description: "invalid tag: missing '='")
            }
            let name = String(trimmed[..<equals].trimmingFWS())
            let value = String(trimmed[trimmed.index(after: equals)...].trimmingFWS())
            guard let first = name.unicodeScalars.first, first.properties.isAlphabetic, first.isASCII,
                name.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_") })
            else {
                throw Invalid(description: name.isEmpty ? "invalid tag: missing tag name" : "invalid tag: bad tag name")
            }
            guard seen.insert(name).inserted else { throw Invalid(description: "invalid tag: duplicate tag") }
            tags.append((name, value))
        }
    }
}

/// The key record at `<selector>._domainkey.<domain>` (RFC 6376 §3.6.1).
public struct DKIMKeyRecord: Sendable, Equatable {
    /// `k=`, "rsa" when absent.
    public var keyType: String
    /// `p=` decoded; empty means the key was revoked.
    public var publicKey: [UInt8]
    /// `h=`: the hash algorithms the key may be used with (nil: any).
    public var hashes: [String]?
    /// `s=`: service types; the key serves email when it has `*` or `email`.
    public var services: [String]
    /// `t=` flags: `y` (testing), `s` (i= must be in d= exactly).
    public var flags: [String]

    /// Whether signatures must not use a subdomain of d= in i=.
    public var isStrict: Bool { flags.contains("s") }

    public init(parsing text: String) throws(DKIMTagList.Invalid) {
        let list = try DKIMTagList(parsing: text)
        // v= is optional, but when present it must be first and DKIM1.
        if let version = list["v"] {
            guard list.tags.first?.name == "v", version == "DKIM1" else {
                throw DKIMTagList.Invalid(description: "v= must come first and be DKIM1")
            }
        }
        keyType = (list["k"] ?? "rsa").lowercased()
        guard let encoded = list["p"] else { throw DKIMTagList.Invalid(description: "no p= tag") }
        let base64 = DKIMSignatureHeader.withoutFWS(encoded)
        guard let data = Data(base64Encoded: base64) else {
            throw DKIMTagList.Invalid(description: "p= is not base64")
        }
        publicKey = Array(data)
        func colonList(_ text: String?) -> [String]? {
            text.map { $0.split(separator: ":").map { String($0.trimmingFWS()).lowercased() } }
        }
        hashes = colonList(list["h"])
        services = colonList(list["s"]) ?? ["*"]
        flags = colonList(list["t"]) ?? []
    }

    /// Whether this key may check a signature of `algorithm`.
    func serves(_ algorithm: DKIMSignatureHeader.Algorithm) -> Bool {
        keyType == algorithm.keyType && (hashes?.contains("sha256") ?? true)
            && (services.contains("*") || services.contains("email"))
    }
}

extension StringProtocol {
    /// Without leading and trailing folding white space (SP, HTAB, CR, LF).
    func trimmingFWS() -> Substring {
        let isFWS: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r\n" || $0 == "\r" || $0 == "\n" }
        let string = Substring(self)
        guard let first = string.firstIndex(where: { !isFWS($0) }), let last = string.lastIndex(where: { !isFWS($0) }) else {
            return ""
        }
        return string[first...last]
    }
}

import TestSupport
import Testing

@testable import DKIM

/// Seeded random mutations of real signature fields, key records and
/// messages: every parser must answer (value or error) without trapping.
/// A cheap stand-in until the libFuzzer targets (issue 18); the seed is
/// fixed, so a failure reproduces.
@Suite struct RobustnessTests {
    typealias Random = SeededRandom

    static let alphabet = Array("=;: \t\r\nabvhdsxltiqz0123456789-_./+@AB".utf8) + [0x00, 0xFF, 0xC3, 0xA9]

    static func mutate(_ seed: [UInt8], _ random: inout Random) -> [UInt8] {
        var bytes = seed
        for _ in 0..<Int.random(in: 1...8, using: &random) {
            let position = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &random)
            switch Int.random(in: 0..<4, using: &random) {
            case 0 where !bytes.isEmpty: bytes.remove(at: position)
            case 1: bytes.insert(alphabet.randomElement(using: &random)!, at: position)
            case 2 where !bytes.isEmpty: bytes[position] = alphabet.randomElement(using: &random)!
            default:
                // Repeat a slice: long values, many tags.
                let end = min(bytes.count, position + Int.random(in: 1...40, using: &random))
                bytes.insert(contentsOf: bytes[position..<end], at: position)
            }
        }
        return bytes
    }

    static let signature = Array(
        ("v=1; a=ed25519-sha256; c=relaxed/relaxed; d=football.example.com; i=@football.example.com; q=dns/txt; "
            + "s=brisbane; t=1528637909; x=1628637909; l=100; h=from : to : subject : date : message-id; "
            + "bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSw").utf8)
    static let record = Array("v=DKIM1; k=ed25519; h=sha256:sha1; s=email:*; t=y:s; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=".utf8)
    static let message = Array(
        "DKIM-Signature: v=1; a=rsa-sha256; d=x; s=y; h=from; bh=AA; b=AA\r\nFrom: a@b\r\n\tfolded\r\nTo: c\r\n\r\nbody  \r\n\r\n"
            .utf8)

    @Test func signatureFields() {
        var random = Random(seed: 1)
        for _ in 0..<5000 {
            let text = String(decoding: Self.mutate(Self.signature, &random), as: UTF8.self)
            _ = try? DKIMSignatureHeader(parsing: text)
            _ = DKIMSignatureHeader.removingSignature(from: Array(("DKIM-Signature:" + text).utf8))
        }
    }

    @Test func keyRecords() {
        var random = Random(seed: 2)
        for _ in 0..<5000 {
            _ = try? DKIMKeyRecord(parsing: String(decoding: Self.mutate(Self.record, &random), as: UTF8.self))
        }
    }

    @Test func messagesThroughTheVerifier() async {
        var random = Random(seed: 3)
        let verifier = DKIMVerifier { _ in .records([String(decoding: RobustnessTests.record, as: UTF8.self)]) }
        for _ in 0..<1000 {
            let bytes = Self.mutate(Self.message, &random)
            _ = try? await verifier.verify(crlf: bytes)
            for canonicalization in [DKIMCanonicalization.simple, .relaxed] {
                var hasher = DKIMBodyHasher(canonicalization: canonicalization, limit: Int.random(in: 0...50, using: &random))
                hasher.feed(bytes)
                _ = hasher.finish()
            }
        }
    }
}

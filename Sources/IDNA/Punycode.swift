/// Punycode (RFC 3492) decoding and encoding, for IDNA labels ("xn--…").
public enum Punycode {
    public struct Error: Swift.Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
    }

    // RFC 3492 §5: parameter values for Punycode.
    private static let base = 36, tMin = 1, tMax = 26, skew = 38, damp = 700
    private static let initialBias = 72, initialN = 0x80

    /// Decodes the part of a label after "xn--".
    public static func decode(_ input: String) throws(Error) -> String {
        let scalars = Array(input.unicodeScalars)
        guard scalars.allSatisfy({ $0.isASCII }) else { throw Error(description: "non-ASCII in punycode \"\(input)\"") }
        var output: [UInt32] = []
        var rest = scalars[...]
        if let delimiter = scalars.lastIndex(of: "-") {
            // A delimiter with no basic code points before it: RFC 3492
            // would read an empty prefix, but Go's decoder (and so
            // chasquid) refuses it, so "xn---" is no domain at all.
            guard delimiter > 0 else { throw Error(description: "punycode with an empty basic prefix \"\(input)\"") }
            output = scalars[..<delimiter].map(\.value)
            rest = scalars[(delimiter + 1)...]
        }
        var n = initialN, i = 0, bias = initialBias
        var position = rest.startIndex
        while position < rest.endIndex {
            let oldI = i
            var w = 1
            var k = base
            while true {
                guard position < rest.endIndex else { throw Error(description: "truncated punycode \"\(input)\"") }
                guard let digit = digitValue(rest[position]) else {
                    throw Error(description: "invalid punycode digit in \"\(input)\"")
                }
                position += 1
                let (product, overflow1) = digit.multipliedReportingOverflow(by: w)
                let (sum, overflow2) = i.addingReportingOverflow(product)
                guard !overflow1, !overflow2, sum <= Int(Int32.max) else {
                    throw Error(description: "punycode overflow in \"\(input)\"")
                }
                i = sum
                let t = k <= bias ? tMin : (k >= bias + tMax ? tMax : k - bias)
                if digit < t { break }
                w *= base - t
                guard w <= Int(Int32.max) else { throw Error(description: "punycode overflow in \"\(input)\"") }
                k += base
            }
            bias = adapt(delta: i - oldI, numPoints: output.count + 1, firstTime: oldI == 0)
            n += i / (output.count + 1)
            i %= output.count + 1
            guard n <= 0x10FFFF, Unicode.Scalar(UInt32(n)) != nil else {
                throw Error(description: "invalid code point in punycode \"\(input)\"")
            }
            output.insert(UInt32(n), at: i)
            i += 1
        }
        var result = String.UnicodeScalarView()
        for v in output { result.append(Unicode.Scalar(v)!) }
        return String(result)
    }

    /// Encodes a label into the part that follows "xn--".
    public static func encode(_ input: String) throws(Error) -> String {
        let codePoints = input.unicodeScalars.map { Int($0.value) }
        var output = String(String.UnicodeScalarView(input.unicodeScalars.filter(\.isASCII)))
        let basicCount = output.unicodeScalars.count
        var handled = basicCount
        if basicCount > 0 { output.append("-") }
        var n = initialN, delta = 0, bias = initialBias
        while handled < codePoints.count {
            let m = codePoints.filter { $0 >= n }.min()!
            let (scaled, overflow) = (m - n).multipliedReportingOverflow(by: handled + 1)
            guard !overflow, delta + scaled <= Int(Int32.max) else {
                throw Error(description: "punycode overflow encoding \"\(input)\"")
            }
            delta += scaled
            n = m
            for c in codePoints {
                if c < n { delta += 1 }
                if c == n {
                    var q = delta
                    var k = base
                    while true {
                        let t = k <= bias ? tMin : (k >= bias + tMax ? tMax : k - bias)
                        if q < t { break }
                        output.unicodeScalars.append(digitScalar(t + (q - t) % (base - t)))
                        q = (q - t) / (base - t)
                        k += base
                    }
                    output.unicodeScalars.append(digitScalar(q))
                    bias = adapt(delta: delta, numPoints: handled + 1, firstTime: handled == basicCount)
                    delta = 0
                    handled += 1
                }
            }
            delta += 1
            n += 1
        }
        return output
    }

    private static func adapt(delta: Int, numPoints: Int, firstTime: Bool) -> Int {
        var delta = firstTime ? delta / damp : delta / 2
        delta += delta / numPoints
        var k = 0
        while delta > ((base - tMin) * tMax) / 2 {
            delta /= base - tMin
            k += base
        }
        return k + (base - tMin + 1) * delta / (delta + skew)
    }

    private static func digitValue(_ s: Unicode.Scalar) -> Int? {
        switch s.value {
        case 0x30...0x39: return Int(s.value) - 0x30 + 26
        case 0x41...0x5A: return Int(s.value) - 0x41
        case 0x61...0x7A: return Int(s.value) - 0x61
        default: return nil
        }
    }

    private static func digitScalar(_ d: Int) -> Unicode.Scalar {
        Unicode.Scalar(UInt8(d < 26 ? d + 0x61 : d - 26 + 0x30))
    }
}

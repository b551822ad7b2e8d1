@testable import Compression
import Core
import Foundation
import Testing
import TestSupport

@Suite("value codecs")
struct ValueCodecTests {
    /// Encodes `v` in `codec` and checks what a lossy codec must keep: `roundTrip` gives what
    /// the receiver decodes, bit for bit, and encoding that again writes the same bytes.
    /// Returns the bytes and the decoded values.
    static func exactUnderRoundTrip(_ codec: ValueCodec, _ v: [Float], _ what: String) throws -> (bytes: [UInt8], decoded: [Float]) {
        let n = v.count
        var w = ByteWriter()
        v.withUnsafeBufferPointer { codec.encode($0.baseAddress!, count: n, into: &w) }
        var decoded = [Float](repeating: 0, count: n)
        var r = ByteReader(w.bytes)
        try decoded.withUnsafeMutableBufferPointer { try codec.decode(&r, into: $0.baseAddress!, count: n) }
        var rt = v
        rt.withUnsafeMutableBufferPointer { codec.roundTrip($0.baseAddress!, count: n) }
        #expect(rt.map(\.bitPattern) == decoded.map(\.bitPattern), "\(codec) \(what)")
        var again = ByteWriter()
        rt.withUnsafeBufferPointer { codec.encode($0.baseAddress!, count: n, into: &again) }
        #expect(again.bytes == w.bytes, "\(codec) \(what): re-encoding changed the list")
        return (w.bytes, decoded)
    }

    @Test func bf16RoundsToNearestEven() {
        #expect(BFloat16.bits(1.0) == 0x3F80)
        #expect(BFloat16.float(BFloat16.bits(1.0)) == 1.0)
        // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties to even (1.0).
        #expect(BFloat16.bits(1 + 1.0 / 256) == 0x3F80)
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: ties to even.
        #expect(BFloat16.bits(1 + 3.0 / 256) == 0x3F82)
        #expect(BFloat16.float(BFloat16.bits(-2.5)) == -2.5)
        #expect(BFloat16.float(BFloat16.bits(.nan)).isNaN)
        #expect(BFloat16.float(BFloat16.bits(.infinity)) == .infinity)
        var rng = Rand(s: 5)
        for _ in 0 ..< 1000 {
            let x = rng.float() * 100
            let y = BFloat16.float(BFloat16.bits(x))
            #expect(abs(y - x) <= abs(x) / 256, "\(x) → \(y)")
        }
    }

    /// int8 lists: what `roundTrip` gives is what the receiver decodes, bit for bit, and
    /// encoding it again writes the same bytes; each block's scale is the smallest power of
    /// two that fits its largest value (so it keeps at least 7 bits), every value is within
    /// half a step of its block's scale, and a list is one byte per value plus an exponent
    /// byte per block of 64.
    @Test func int8ListsAreExactUnderRoundTripAndWithinHalfAStep() throws {
        var rng = Rand(s: 23)
        let magnitudes: [Float] = [1e-30, 1e-7, 3e-3, 1, 250, 4e20]
        for m in magnitudes {
            for n in [1, 2, 7, 64, 65, 300] {
                var v = (0 ..< n).map { _ in rng.float() * m }
                if n > 2 { v[1] = 0; v[2] = -v[0] }
                let (w, decoded) = try Self.exactUnderRoundTrip(.int8, v, "\(m) × \(n)")
                #expect(w.count == n + (n + 63) / 64)
                for b in stride(from: 0, to: n, by: 64) {
                    let e = Int(Int8(bitPattern: w[b + b / 64]))
                    let step = Float(sign: .plus, exponent: e, significand: 1)
                    let block = b ..< min(n, b + 64)
                    let largest = v[block].map { abs($0) }.max()!
                    #expect(largest <= 127 * step && (largest > 63.5 * step || e == Int(ScaledBlocks.minExponent)), "\(m): exponent \(e) for \(largest)")
                    for i in block { #expect(abs(v[i] - decoded[i]) <= step / 2, "\(v[i]) → \(decoded[i]), step \(step)") }
                }
            }
        }
        // All zeros, and a list with a NaN or an infinity: NaN throughout, both ways.
        for bad: Float in [.nan, .infinity, -.infinity] {
            var v: [Float] = [1, bad, 3]
            var w = ByteWriter()
            v.withUnsafeBufferPointer { ValueCodec.int8.encode($0.baseAddress!, count: 3, into: &w) }
            var out = [Float](repeating: 0, count: 3)
            var r = ByteReader(w.bytes)
            try out.withUnsafeMutableBufferPointer { try ValueCodec.int8.decode(&r, into: $0.baseAddress!, count: 3) }
            v.withUnsafeMutableBufferPointer { ValueCodec.int8.roundTrip($0.baseAddress!, count: 3) }
            #expect(out.allSatisfy(\.isNaN) && v.allSatisfy(\.isNaN))
        }
        var zeros: [Float] = [0, 0, -0.0]
        zeros.withUnsafeMutableBufferPointer { ValueCodec.int8.roundTrip($0.baseAddress!, count: 3) }
        #expect(zeros.allSatisfy { $0 == 0 })
        // An exponent no encoder writes is a wire error, not a value.
        var r = ByteReader([UInt8(bitPattern: 127), 5])
        var out: Float = 0
        #expect(throws: WireError.self) { try ValueCodec.int8.decode(&r, into: &out, count: 1) }
    }

    /// int4 lists: what `roundTrip` gives is what the receiver decodes, bit for bit, and
    /// re-encoding writes the same bytes; each block's scale is the smallest bf16 at or above
    /// its largest |v| / 12, and each value decodes to the nearest of ±(0, 1, 2, 3, 4.5, 6.5,
    /// 9, 12) times it, keeping its sign.
    @Test func int4ListsRoundToTheNearestLevelOfTheirBlocksScale() throws {
        let levels: [Float] = [0, 1, 2, 3, 4.5, 6.5, 9, 12]
        var rng = Rand(s: 31)
        for m: Float in [1e-7, 1, 300] {
            for n in [1, 2, 3, 15, 17, 63, 64, 65, 201] {
                // Heavy-tailed, as a gradient's block is: most values far below its largest.
                var v = (0 ..< n).map { _ in let u = rng.float(); return u * u * u * m }
                if n > 2 { v[1] = 0; v[2] = -v[0] }
                let (w, decoded) = try Self.exactUnderRoundTrip(.int4, v, "\(m) × \(n)")
                let blocks = (n + 63) / 64, last = n - (blocks - 1) * 64
                #expect(w.count == (blocks - 1) * 34 + 2 + (last + 1) / 2, "\(n) values: \(w.count) bytes")
                for (k, b) in stride(from: 0, to: n, by: 64).enumerated() {
                    let block = b ..< min(n, b + 64)
                    let largest = v[block].map { abs($0) }.max()!
                    let sBits = UInt16(w[34 * k]) | UInt16(w[34 * k + 1]) << 8
                    let s = Float(bitPattern: UInt32(sBits) << 16), below = Float(bitPattern: UInt32(sBits - 1) << 16)
                    #expect(Double(s) * 12 >= Double(largest) && Double(below) * 12 < Double(largest), "scale \(s) for \(largest)")
                    for i in block {
                        let a = abs(v[i]) / s
                        let chosen = abs(decoded[i]) / s
                        #expect(levels.contains(chosen) && levels.allSatisfy { abs(a - chosen) <= abs(a - $0) + 1e-5 },
                                "\(v[i]) → \(decoded[i]) at scale \(s)")
                        #expect(decoded[i] == 0 || (decoded[i] < 0) == (v[i] < 0), "the sign of \(v[i])")
                    }
                    #expect(decoded[block].map { abs($0) }.max() == 12 * s, "a block's largest value is on the top level")
                }
            }
        }
    }

    /// int4's blocks of zeros stay zeros, a non-finite value makes its block NaN both ways,
    /// and a scale no encoder writes (negative, infinite) is a wire error.
    @Test func int4ZerosNonFiniteAndBadScales() throws {
        for bad: Float in [.nan, .infinity, -.infinity] {
            var v: [Float] = [1, bad, 3]
            var w = ByteWriter()
            v.withUnsafeBufferPointer { ValueCodec.int4.encode($0.baseAddress!, count: 3, into: &w) }
            var out = [Float](repeating: 0, count: 3)
            var r = ByteReader(w.bytes)
            try out.withUnsafeMutableBufferPointer { try ValueCodec.int4.decode(&r, into: $0.baseAddress!, count: 3) }
            v.withUnsafeMutableBufferPointer { ValueCodec.int4.roundTrip($0.baseAddress!, count: 3) }
            #expect(out.allSatisfy(\.isNaN) && v.allSatisfy(\.isNaN))
        }
        var zeros: [Float] = [0, -0.0, 1e-45]
        zeros.withUnsafeMutableBufferPointer { ValueCodec.int4.roundTrip($0.baseAddress!, count: 3) }
        #expect(zeros.allSatisfy { $0 == 0 && $0.sign == .plus })
        for scale: UInt16 in [0xBF80, 0x7F80] {
            var r = ByteReader([UInt8(scale & 0xFF), UInt8(scale >> 8), 0x11])
            var out: Float = 0
            #expect(throws: WireError.self) { try ValueCodec.int4.decode(&r, into: &out, count: 1) }
        }
    }

    /// A block's scale is its own: small values after a block of large ones keep their
    /// digits, and a non-finite value spoils only its block.
    @Test func int8BlocksScaleAlone() throws {
        let large: [Float] = (0 ..< 64).map { Float($0 + 1) * 1000 }, small: [Float] = (0 ..< 64).map { Float($0 + 1) * 1e-3 }
        var v: [Float] = large + small
        var rt = v
        rt.withUnsafeMutableBufferPointer { ValueCodec.int8.roundTrip($0.baseAddress!, count: 128) }
        for i in 64 ..< 128 {
            let error: Float = abs(rt[i] - v[i])
            // Half a step of the small block's own scale (the large block's would round all to 0).
            #expect(error <= 0.064 / 127 && rt[i] != 0, "\(v[i]) → \(rt[i])")
        }
        v[3] = Float.nan
        var w = ByteWriter()
        v.withUnsafeBufferPointer { ValueCodec.int8.encode($0.baseAddress!, count: 128, into: &w) }
        var out = [Float](repeating: 0, count: 128)
        var r = ByteReader(w.bytes)
        try out.withUnsafeMutableBufferPointer { try ValueCodec.int8.decode(&r, into: $0.baseAddress!, count: 128) }
        #expect(out[..<64].allSatisfy(\.isNaN) && zip(out[64...], rt[64...]).allSatisfy { $0 == $1 })
    }

    @Test func indexListsRoundTripAndAreChecked() throws {
        let idx: [UInt32] = [0, 1, 5, 300, 70_000, 1 << 30]
        var w = ByteWriter()
        IndexCodec.encode(idx, into: &w)
        var r = ByteReader(w.bytes)
        #expect(try IndexCodec.decode(&r, bound: 1 << 31, maxCount: 10) == idx)
        #expect(w.bytes.count < 4 * idx.count)
        func decode(_ bytes: [UInt8], bound: UInt32 = 100, max: Int = 10) throws {
            var r = ByteReader(bytes)
            _ = try IndexCodec.decode(&r, bound: bound, maxCount: max)
        }
        #expect(throws: WireError.malformedPayload("indices not strictly increasing at 1")) { try decode([2, 5, 0]) }
        #expect(throws: WireError.malformedPayload("index 101 not below 100")) { try decode([2, 5, 96]) }
        #expect(throws: WireError.malformedPayload("11 indices, at most 10 allowed")) { try decode([11]) }
        #expect(throws: WireError.malformedPayload("index delta: needs 1 bytes, 0 left")) { try decode([2, 0x85]) }
        #expect(throws: WireError.malformedPayload("index count: varint longer than 64 bits")) { try decode([UInt8](repeating: 0xFF, count: 11)) }
        // A huge delta must not overflow.
        #expect(throws: WireError.malformedPayload("index delta 18446744073709551615 not below 100")) {
            try decode([2, 5, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
        }
    }
}

import Core

/// The arithmetic of `ValueCodec.int8`, shared by the encoder, the decoder and `roundTrip`:
/// a list in blocks of `block` values, each block an exponent byte e (its scale 2^e) and
/// per value a signed byte q with |q| ≤ 127, v = q · 2^e. (int4's blocks, `LevelBlocks`,
/// share the block length and the search for a block's largest value.)
public enum ScaledBlocks {
    /// Values per scale: 64 keeps a scale within one row's neighbourhood of a weight
    /// matrix, for one byte in 64 (1.6%).
    public static let block = 64

    /// The exponent byte of a block with a NaN or an infinity.
    static let nonFinite: Int8 = .min
    /// 2^-140 is still a (subnormal) Float; values below half of it round to zero.
    static let minExponent: Int8 = -127
    /// 127 · 2^120 is below Float's largest finite value (about 2^128).
    static let maxExponent: Int8 = 120

    /// The largest |q|.
    static let limit: Float = 127

    /// Bytes of one block of `n` values: its exponent byte and the values.
    @inline(__always) static func blockSize(_ n: Int) -> Int { 1 + n }

    /// Bytes of `count` values.
    public static func encodedSize(_ count: Int) -> Int {
        let full = count / block, rest = count % block
        return full * blockSize(block) + (rest > 0 ? blockSize(rest) : 0)
    }

    /// Calls `body(start, count)` for each block of a list of `count` values, in order.
    @inline(__always) static func forEachBlock(_ count: Int, _ body: (Int, Int) throws -> Void) rethrows {
        var b = 0
        while b < count {
            let n = min(block, count - b)
            try body(b, n)
            b += n
        }
    }

    /// The bits of the largest |v| of `count` values (0x7F80_0000 or more: one is not
    /// finite). A finite float's magnitude orders as its bits do, and a non-finite one's
    /// bits are the largest, so one max over the bits finds both.
    static func largestMagnitudeBits(_ p: UnsafePointer<Float>, count: Int) -> UInt32 {
        let magnitude = SIMD16<UInt32>(repeating: 0x7FFF_FFFF)
        var bits = SIMD16<UInt32>(repeating: 0)
        var i = 0
        while i + 16 <= count {
            bits = pointwiseMax(bits, unsafeBitCast(p.simd(SIMD16<Float>.self, at: i), to: SIMD16<UInt32>.self) & magnitude)
            i += 16
        }
        var top = bits.max()
        while i < count { top = max(top, p[i].bitPattern & 0x7FFF_FFFF); i += 1 }
        return top
    }

    /// The smallest e with max |v| ≤ 127 · 2^e (nil when a value is not finite).
    static func exponent(_ p: UnsafePointer<Float>, count: Int) -> Int8? {
        let limit = Self.limit
        let top = largestMagnitudeBits(p, count: count)
        guard top < 0x7F80_0000 else { return nil }
        let m = Float(bitPattern: top)
        guard m > 0 else { return minExponent }
        // m / limit = f · 2^x with f in [1, 2): e = x, or x + 1 when f > 1.
        let r = m / limit
        var e = Int(r.exponent) + (r.significand > 1 ? 1 : 0)
        while e > Int(minExponent) && m <= limit * Float(sign: .plus, exponent: e - 1, significand: 1) { e -= 1 }
        while m > limit * Float(sign: .plus, exponent: e, significand: 1) { e += 1 }
        return Int8(clamping: max(Int(minExponent), min(Int(maxExponent), e)))
    }

    @inline(__always) static func scale(_ e: Int8) -> Float { Float(sign: .plus, exponent: Int(e), significand: 1) }

    /// q = round(v / 2^e) to nearest, ties to even: within the limit for an exponent from
    /// `exponent` (a power-of-two scale makes v / 2^e exact, so only the rounding rounds).
    @inline(__always) static func quantize(_ v: Float, _ inverse: Float) -> Int8 {
        Int8(clamping: Int((v * inverse).rounded(.toNearestOrEven)))
    }

    /// Replaces `count` values by what the receiver decodes at exponent `e`.
    static func round(_ p: UnsafeMutablePointer<Float>, count: Int, exponent e: Int8) {
        let s = scale(e), inverse = 1 / s
        var i = 0
        while i + 16 <= count {
            // (+ 0: a value rounded to −0 decodes as +0, and the bits must agree.)
            p.store((p.simd(SIMD16<Float>.self, at: i) * inverse).rounded(.toNearestOrEven) * s + 0, at: i)
            i += 16
        }
        while i < count { p[i] = Float(quantize(p[i], inverse)) * s; i += 1 }
    }

    /// `ValueCodec.roundTrip` of a scaled-block codec.
    static func roundTrip(_ p: UnsafeMutablePointer<Float>, count: Int) {
        forEachBlock(count) { b, n in
            let q = p + b
            guard let e = exponent(q, count: n) else {
                for i in 0 ..< n { q[i] = .nan }
                return
            }
            round(q, count: n, exponent: e)
        }
    }

    /// The q of `count` values at exponent `e`, one byte each.
    static func quantize(_ p: UnsafePointer<Float>, count: Int, exponent e: Int8, into out: UnsafeMutablePointer<UInt8>) {
        let inverse = 1 / scale(e)
        let magic = SIMD16<Float>(repeating: 12_582_912), magicBits = SIMD16<Int32>(repeating: 0x4B40_0000)
        var i = 0
        while i + 16 <= count {
            // Adding 1.5 · 2²³ rounds |x| ≤ 127 to an integer, to nearest and ties to even, in
            // the float's low bits (a float-to-integer vector conversion compiled to a loop
            // over the lanes and took 16x the time).
            let x = p.simd(SIMD16<Float>.self, at: i) * inverse + magic
            let q = unsafeBitCast(x, to: SIMD16<Int32>.self) &- magicBits
            UnsafeMutableRawPointer(out + i).storeBytes(of: SIMD16<Int8>(truncatingIfNeeded: q), as: SIMD16<Int8>.self)
            i += 16
        }
        while i < count { out[i] = UInt8(bitPattern: quantize(p[i], inverse)); i += 1 }
    }

    /// `ValueCodec.encode` of a scaled-block codec.
    static func encode(_ p: UnsafePointer<Float>, count: Int, into w: inout ByteWriter) {
        w.raw([UInt8](unsafeUninitializedCapacity: encodedSize(count)) { out, written in
            var o = 0
            forEachBlock(count) { b, n in
                let size = blockSize(n)
                guard let e = exponent(p + b, count: n) else {
                    out[o] = UInt8(bitPattern: nonFinite)
                    for i in 1 ..< size { out[o + i] = 0 }
                    o += size
                    return
                }
                out[o] = UInt8(bitPattern: e)
                quantize(p + b, count: n, exponent: e, into: out.baseAddress! + o + 1)
                o += size
            }
            written = o
        })
    }

    /// `ValueCodec.decode` of a scaled-block codec: an exponent no encoder writes is a
    /// wire error, not a value.
    static func decode(_ r: inout ByteReader, into out: UnsafeMutablePointer<Float>, count: Int, what: String) throws {
        let bytes = try r.raw(encodedSize(count), "\(what) values")
        try bytes.withUnsafeBytes { src in
            var o = 0
            var bad: Int8? = nil
            forEachBlock(count) { b, n in
                let e = Int8(bitPattern: src[o])
                let q = out + b
                if e == nonFinite {
                    for i in 0 ..< n { q[i] = .nan }
                } else if e < minExponent || e > maxExponent {
                    bad = bad ?? e
                } else {
                    let s = scale(e)
                    for i in 0 ..< n { q[i] = Float(Int8(bitPattern: src[o + 1 + i])) * s }
                }
                o += blockSize(n)
            }
            if let e = bad {
                throw WireError.malformedPayload("\(what) scale exponent \(e) outside \(minExponent)...\(maxExponent)")
            }
        }
    }
}

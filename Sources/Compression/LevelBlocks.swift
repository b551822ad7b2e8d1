import Core

/// The arithmetic of `ValueCodec.int4`, shared by the encoder, the decoder and `roundTrip`:
/// a list in blocks of `ScaledBlocks.block` values, each block a bf16 scale s (two bytes,
/// little-endian: the smallest bf16 ≥ its largest |v| / 12) and per value four bits, a sign
/// (bit 3) and the index k of one of eight levels (bits 0-2), v = ±L[k] · s with
/// L = 0, 1, 2, 3, 4.5, 6.5, 9, 12. Two values a byte, the first in the low half.
///
/// Why levels and not int8's evenly spaced steps at a power-of-two scale: within a block of
/// a gradient most values are far below its largest. Seven even steps round them to zero or
/// to one step, and error feedback then sends each as a rare whole step, which AdamW's
/// variance takes as a larger gradient (√v of a gradient's smaller weights rose 10-25% in
/// int4 runs, their steps shrinking as much). Levels closer together near zero and a scale
/// that puts the largest value on the top level cut the rounding's error 2.6x and put v
/// back where fp32 has it; top-1 did not move with it (docs/benchmarks.md).
public enum LevelBlocks {
    /// The midpoints between neighbouring levels (the eighth lane: none above the top).
    /// a = |v| / s rounds to the nearest level, a tie to the lower one; a block's largest
    /// value lands on the top level (a ≥ 12 / (1 + 2⁻⁷) > 10.5).
    @inline(__always) static var midpoints: SIMD8<Float> { SIMD8(0.5, 1.5, 2.5, 3.75, 5.5, 7.75, 10.5, .infinity) }
    /// The step from each level to the next: the levels 0, 1, 2, 3, 4.5, 6.5, 9, 12 are
    /// their sums, which the vector rounding and the decoder's table both add in this order,
    /// so the two give the same floats.
    @inline(__always) static var steps: SIMD8<Float> { SIMD8(1, 1, 1, 1.5, 2, 2.5, 3, 0) }

    /// The top level (12, all the steps): the scale is a block's largest |v| over it.
    @inline(__always) static var top: Float { steps.sum() }
    /// The scale of a block with a NaN or an infinity (a bf16 NaN).
    static let nonFiniteScale: UInt16 = 0x7FC0
    /// The largest finite bf16: the scale of a block whose largest |v| / 12 rounds above it.
    static let largestScale: UInt32 = 0x7F7F_0000

    /// Bytes of one block of `n` values.
    @inline(__always) static func blockSize(_ n: Int) -> Int { 2 + (n + 1) / 2 }

    /// Bytes of `count` values.
    public static func encodedSize(_ count: Int) -> Int {
        let full = count / ScaledBlocks.block, rest = count % ScaledBlocks.block
        return full * blockSize(ScaledBlocks.block) + (rest > 0 ? blockSize(rest) : 0)
    }

    /// The bf16 bits of a block's scale: the smallest bf16 ≥ its largest |v| / 12 (0 for a
    /// block of zeros or of values too small for it), nil when a value is not finite.
    static func scaleBits(_ p: UnsafePointer<Float>, count: Int) -> UInt16? {
        let top = ScaledBlocks.largestMagnitudeBits(p, count: count)
        guard top < 0x7F80_0000 else { return nil }
        var b = (Float(bitPattern: top) / Self.top).bitPattern
        if b & 0xFFFF != 0 { b = (b | 0xFFFF) &+ 1 }
        return UInt16(min(b, largestScale) >> 16)
    }

    @inline(__always) static func scale(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    // Seven lines each, not a loop over the lanes of `midpoints`: the loop compiled to
    // shuffles and took three times as long.

    /// The level index of each a = |v| / s: how many midpoints lie below it.
    @inline(__always) static func index(_ a: SIMD16<Float>) -> SIMD16<UInt32> {
        let m = midpoints, one = SIMD16<UInt32>(repeating: 1)
        var k = one.replacing(with: 0, where: a .<= m[0])
        k &+= one.replacing(with: 0, where: a .<= m[1])
        k &+= one.replacing(with: 0, where: a .<= m[2])
        k &+= one.replacing(with: 0, where: a .<= m[3])
        k &+= one.replacing(with: 0, where: a .<= m[4])
        k &+= one.replacing(with: 0, where: a .<= m[5])
        k &+= one.replacing(with: 0, where: a .<= m[6])
        return k
    }

    /// The level of each a = |v| / s: the steps below it, summed in order.
    @inline(__always) static func level(_ a: SIMD16<Float>) -> SIMD16<Float> {
        let m = midpoints, d = steps, zero = SIMD16<Float>(repeating: 0)
        var l = SIMD16(repeating: d[0]).replacing(with: zero, where: a .<= m[0])
        l += SIMD16(repeating: d[1]).replacing(with: zero, where: a .<= m[1])
        l += SIMD16(repeating: d[2]).replacing(with: zero, where: a .<= m[2])
        l += SIMD16(repeating: d[3]).replacing(with: zero, where: a .<= m[3])
        l += SIMD16(repeating: d[4]).replacing(with: zero, where: a .<= m[4])
        l += SIMD16(repeating: d[5]).replacing(with: zero, where: a .<= m[5])
        l += SIMD16(repeating: d[6]).replacing(with: zero, where: a .<= m[6])
        return l
    }

    /// The four-bit codes of 16 values at 1 / s (no sign on a zero).
    @inline(__always) static func codes(_ x: SIMD16<Float>, inverse: Float) -> SIMD16<UInt32> {
        let bits = unsafeBitCast(x, to: SIMD16<UInt32>.self)
        let k = index(unsafeBitCast(bits & 0x7FFF_FFFF, to: SIMD16<Float>.self) * inverse)
        // The sign bit where k > 0 (min(k, 1) is the vector's mask; a lane select here
        // compiled to a loop over the lanes).
        return k | (((bits &>> 31) & pointwiseMin(k, SIMD16(repeating: 1))) &<< 3)
    }

    /// What the receiver decodes from each of 16 values at scale s: ±level · s, a zero +0.
    @inline(__always) static func rounded(_ x: SIMD16<Float>, scale s: Float, inverse: Float) -> SIMD16<Float> {
        let bits = unsafeBitCast(x, to: SIMD16<UInt32>.self)
        let l = level(unsafeBitCast(bits & 0x7FFF_FFFF, to: SIMD16<Float>.self) * inverse)
        let sign = (bits & 0x8000_0000).replacing(with: 0, where: l .== 0)
        return unsafeBitCast(unsafeBitCast(l * s, to: SIMD16<UInt32>.self) | sign, to: SIMD16<Float>.self)
    }

    /// Replaces `count` values of a block by what the receiver decodes at scale bits `h`.
    static func round(_ p: UnsafeMutablePointer<Float>, count: Int, scale h: UInt16) {
        let s = scale(h)
        guard s > 0 else { p.update(repeating: 0, count: count); return }
        let inverse = 1 / s
        var i = 0
        while i + 16 <= count {
            p.store(rounded(p.simd(SIMD16<Float>.self, at: i), scale: s, inverse: inverse), at: i)
            i += 16
        }
        guard i < count else { return }
        var x = SIMD16<Float>(repeating: 0)
        for j in 0 ..< count - i { x[j] = p[i + j] }
        let r = rounded(x, scale: s, inverse: inverse)
        for j in 0 ..< count - i { p[i + j] = r[j] }
    }

    /// Codes of the last `count` (< 16) values of a block, one by one.
    @inline(__always) static func tail(_ p: UnsafePointer<Float>, count: Int, inverse: Float, _ body: (Int, UInt8) -> Void) {
        var x = SIMD16<Float>(repeating: 0)
        for j in 0 ..< count { x[j] = p[j] }
        let c = codes(x, inverse: inverse)
        for j in 0 ..< count { body(j, UInt8(truncatingIfNeeded: c[j])) }
    }

    /// `ValueCodec.roundTrip` of int4.
    static func roundTrip(_ p: UnsafeMutablePointer<Float>, count: Int) {
        ScaledBlocks.forEachBlock(count) { b, n in
            guard let h = scaleBits(p + b, count: n) else {
                (p + b).update(repeating: .nan, count: n)
                return
            }
            round(p + b, count: n, scale: h)
        }
    }

    /// `ValueCodec.encode` of int4.
    static func encode(_ p: UnsafePointer<Float>, count: Int, into w: inout ByteWriter) {
        w.raw([UInt8](unsafeUninitializedCapacity: encodedSize(count)) { out, written in
            let base = out.baseAddress!
            var o = 0
            ScaledBlocks.forEachBlock(count) { b, n in
                let size = blockSize(n)
                (base + o).initialize(repeating: 0, count: size)
                let h = scaleBits(p + b, count: n) ?? nonFiniteScale
                base[o] = UInt8(truncatingIfNeeded: h); base[o + 1] = UInt8(truncatingIfNeeded: h >> 8)
                let s = scale(h)
                if s > 0 && s.isFinite {
                    let codes = base + o + 2, inverse = 1 / s
                    var i = 0
                    while i + 16 <= n {
                        let c = Self.codes((p + b).simd(SIMD16<Float>.self, at: i), inverse: inverse)
                        for j in 0 ..< 8 { codes[i / 2 + j] = UInt8(truncatingIfNeeded: c[2 * j] | c[2 * j + 1] << 4) }
                        i += 16
                    }
                    if i < n { tail(p + b + i, count: n - i, inverse: inverse) { j, c in codes[(i + j) / 2] |= (i + j) % 2 == 0 ? c : c << 4 } }
                }
                o += size
            }
            written = o
        })
    }

    /// `ValueCodec.decode` of int4: a scale no encoder writes (negative, infinite) is a wire
    /// error, not a value.
    static func decode(_ r: inout ByteReader, into out: UnsafeMutablePointer<Float>, count: Int) throws {
        let bytes = try r.raw(encodedSize(count), "int4 values")
        // Each block's sixteen values, one table lookup a code.
        let table = UnsafeMutablePointer<Float>.allocate(capacity: 16)
        defer { table.deallocate() }
        try bytes.withUnsafeBytes { src in
            var o = 0
            var bad: UInt16? = nil
            ScaledBlocks.forEachBlock(count) { b, n in
                let h = UInt16(src[o]) | UInt16(src[o + 1]) << 8
                let s = scale(h), q = out + b
                if s.isNaN {
                    q.update(repeating: .nan, count: n)
                } else if s < 0 || s.isInfinite {
                    bad = bad ?? h
                } else {
                    // ±level · s by code (sign bit 3; a zero is +0), the levels summed as `rounded` sums them.
                    var level: Float = 0
                    for k in 0 ..< 8 {
                        if k > 0 { level += steps[k - 1] }
                        table[k] = level * s
                        table[k + 8] = k == 0 ? 0 : -(level * s)
                    }
                    let codes = src.baseAddress! + o + 2
                    for j in 0 ..< n / 2 {
                        let byte = codes.load(fromByteOffset: j, as: UInt8.self)
                        q[2 * j] = table[Int(byte & 0xF)]
                        q[2 * j + 1] = table[Int(byte >> 4)]
                    }
                    if n % 2 == 1 { q[n - 1] = table[Int(codes.load(fromByteOffset: n / 2, as: UInt8.self) & 0xF)] }
                }
                o += blockSize(n)
            }
            if let h = bad { throw WireError.malformedPayload("int4 block scale \(scale(h))") }
        }
    }
}

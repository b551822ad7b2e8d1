/// Vectorised elementary functions for `SIMD8<Float>`. The scalar library functions are
/// not vectorised by the compiler, and GELU's erf and softmax's exp run over every
/// activation, so these are on the hot path. Accuracy is stated per function and
/// checked against the Double library in the tests.
public typealias Vec8 = SIMD8<Float>

public enum SIMDMath {
    /// e^x with relative error below 2 ulp over the float range (Cephes-style range
    /// reduction x = k·ln2 + r, |r| ≤ ln2/2, degree-6 polynomial). Inputs below
    /// -87.3 flush to 0, above 88.7 saturate to FLT_MAX·e^… (clamped).
    @inlinable @inline(__always)
    public static func exp(_ x: Vec8) -> Vec8 {
        // Only operations that lower to vector instructions are used here: arithmetic,
        // comparisons with replacing(with:where:), bit casts and integer shifts.
        // (pointwiseMin/Max and SIMD8<Int32>(_:rounding:) compile to generic per-lane code.)
        let lo = Vec8(repeating: -87.33654), hi = Vec8(repeating: 88.72283)
        var xc = x.replacing(with: lo, where: x .< lo)
        xc = xc.replacing(with: hi, where: xc .> hi)
        // k = round(x / ln2) by the 1.5·2^23 trick: adding it rounds to an integer held
        // in the low mantissa bits, which also gives k as an integer without a convert.
        let magic = Vec8(repeating: 12582912.0)
        let shifted = xc * 1.44269504088896341 + magic
        let kf = shifted - magic
        let ki = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
        // r = x - k·ln2, with ln2 split in two so the product is exact.
        var r = xc - kf * 0.693359375
        r = r - kf * -2.12194440e-4
        var p = Vec8(repeating: 1.9875691500e-4)
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let r2 = r * r
        let er = p * r2 + r + 1
        // 2^k assembled in the exponent field.
        let scale = unsafeBitCast((ki &+ 127) &<< 23, to: Vec8.self)
        let result = er * scale
        // Below the clamp the true value underflows; return exactly 0 there.
        return result.replacing(with: 0, where: x .< lo)
    }

    /// erf(x) by Abramowitz & Stegun 7.1.26 on |x| with the sign restored: absolute
    /// error ≤ 1.5e-7 in exact arithmetic, ≤ 4e-7 as computed in Float (tested), so
    /// (1 + erf) in GELU is right to a few float ulps.
    /// Small |x| uses the Maclaurin series so that erf(x)/x stays accurate near 0.
    @inlinable @inline(__always)
    public static func erf(_ x: Vec8) -> Vec8 { erfAndGaussian(x).erf }

    /// erf(x) together with e^(−x²), which erf computes anyway: GELU's backward needs
    /// both (φ(x) ∝ e^(−x²/2) = e^(−z²) at z = x/√2), so it pays for one exp, not two.
    @inlinable @inline(__always)
    public static func erfAndGaussian(_ x: Vec8) -> (erf: Vec8, gaussian: Vec8) {
        let ax = SIMDMath.abs(x)
        let t = 1 / (ax * 0.3275911 + 1)
        var poly = Vec8(repeating: 1.061405429)
        poly = poly * t - 1.453152027
        poly = poly * t + 1.421413741
        poly = poly * t - 0.284496736
        poly = poly * t + 0.254829592
        poly = poly * t
        let gaussian = exp(-ax * ax)
        let far = 1 - poly * gaussian
        // Series: erf(x) = 2/√π (x - x³/3 + x⁵/10 - x⁷/42 + x⁹/216 - x¹¹/1320),
        // truncation error < 2e-8 for |x| < 0.5.
        let x2 = x * x
        var s = Vec8(repeating: -1.0 / 1320.0)
        s = s * x2 + 1.0 / 216.0
        s = s * x2 - 1.0 / 42.0
        s = s * x2 + 1.0 / 10.0
        s = s * x2 - 1.0 / 3.0
        s = s * x2 + 1
        let twoOverSqrtPi: Float = 1.1283791670955126
        let near = s * x * twoOverSqrtPi
        let signed = far.replacing(with: -far, where: x .< 0)
        return (signed.replacing(with: near, where: ax .< 0.5), gaussian)
    }

    /// |x| by clearing the sign bit.
    @inlinable @inline(__always)
    public static func abs(_ x: Vec8) -> Vec8 {
        unsafeBitCast(unsafeBitCast(x, to: SIMD8<UInt32>.self) & 0x7FFF_FFFF, to: Vec8.self)
    }

    /// Sum of the lanes, in a fixed order so results do not depend on the caller.
    @inlinable @inline(__always)
    public static func sum(_ v: Vec8) -> Float { v.sum() }
}

extension UnsafePointer where Pointee == Float {
    @inlinable @inline(__always)
    func loadVec8(_ i: Int) -> Vec8 {
        UnsafeRawPointer(self + i).loadUnaligned(as: Vec8.self)
    }
}

extension UnsafeMutablePointer where Pointee == Float {
    @inlinable @inline(__always)
    func loadVec8(_ i: Int) -> Vec8 {
        UnsafeRawPointer(self + i).loadUnaligned(as: Vec8.self)
    }

    @inlinable @inline(__always)
    func storeVec8(_ v: Vec8, _ i: Int) {
        UnsafeMutableRawPointer(self + i).storeBytes(of: v, as: Vec8.self)
    }
}

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

    /// erf(x) as x·P(x²)/Q(x²) on x clamped to [−4, 4] (a minimax rational form of
    /// degrees 13/8, the one Eigen uses for float; erf(±4) is ±1 to within 2e-8). Absolute
    /// error ≤ 4e-7 and relative error ≤ 4e-7 near 0 as computed in Float (tested). It
    /// has no exp and no branch: 12 multiply-adds and one division per 8 lanes, 2.4×
    /// faster than Abramowitz & Stegun 7.1.26 with its exp and small-|x| series.
    @inlinable @inline(__always)
    public static func erf(_ a: Vec8) -> Vec8 {
        var x = a.replacing(with: Vec8(repeating: 4), where: a .> 4)
        x = x.replacing(with: Vec8(repeating: -4), where: x .< -4)
        let x2 = x * x
        var p = Vec8(repeating: -2.72614225801306e-10)
        p = p * x2 + 2.77068142495902e-08
        p = p * x2 - 2.10102402082508e-06
        p = p * x2 - 5.69250639462346e-05
        p = p * x2 - 7.34990630326855e-04
        p = p * x2 - 2.95459980854025e-03
        p = p * x2 - 1.60960333262415e-02
        p = p * x
        var q = Vec8(repeating: -1.45660718464996e-05)
        q = q * x2 - 2.13374055278905e-04
        q = q * x2 - 1.68282697438203e-03
        q = q * x2 - 7.37332916720468e-03
        q = q * x2 - 1.42647390514189e-02
        return p / q
    }

    /// erf(x) together with e^(−x²): GELU's backward needs both (φ(x) ∝ e^(−x²/2) =
    /// e^(−z²) at z = x/√2).
    @inlinable @inline(__always)
    public static func erfAndGaussian(_ x: Vec8) -> (erf: Vec8, gaussian: Vec8) {
        (erf(x), exp(-x * x))
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

// Elementwise and row-wise kernels as forward/backward pairs. Conventions (llm.c):
// outputs first; shapes in comments; backward *accumulates* (+=) into gradient buffers
// the caller has zeroed. Each kernel runs on the calling thread over the rows it is
// given; callers split work across threads by rows (see `Parallel`).

@usableFromInline let invSqrt2: Float = 0.70710678118654752
@usableFromInline let invSqrt2Pi: Float = 0.39894228040143268

// MARK: - Vector helpers

public enum VectorOps {
    /// sum of p[0..<n]
    @inlinable
    public static func sum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        var a0 = Vec8(), a1 = Vec8()
        var i = 0
        while i + 16 <= n { a0 += p.loadVec8(i); a1 += p.loadVec8(i + 8); i += 16 }
        if i + 8 <= n { a0 += p.loadVec8(i); i += 8 }
        var s = (a0 + a1).sum()
        while i < n { s += p[i]; i += 1 }
        return s
    }

    /// Σ |p[i]| (the sign bit cleared lane-wise)
    @inlinable
    public static func absSum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        let keep = SIMD8<UInt32>(repeating: 0x7FFF_FFFF)
        @inline(__always) func abs8(_ v: Vec8) -> Vec8 { unsafeBitCast(unsafeBitCast(v, to: SIMD8<UInt32>.self) & keep, to: Vec8.self) }
        var a0 = Vec8(), a1 = Vec8()
        var i = 0
        while i + 16 <= n { a0 += abs8(p.loadVec8(i)); a1 += abs8(p.loadVec8(i + 8)); i += 16 }
        if i + 8 <= n { a0 += abs8(p.loadVec8(i)); i += 8 }
        var s = (a0 + a1).sum()
        while i < n { s += Swift.abs(p[i]); i += 1 }
        return s
    }

    /// Whether every p[i] is finite (no NaN, no infinity): the exponent bits of eight lanes
    /// at a time are all ones exactly for the non-finite values.
    @inlinable
    public static func allFinite(_ p: UnsafePointer<Float>, _ n: Int) -> Bool {
        let exponent = SIMD8<UInt32>(repeating: 0x7F80_0000)
        var bad = SIMDMask<SIMD8<Int32>>(repeating: false)
        var i = 0
        while i + 8 <= n {
            bad .|= (unsafeBitCast(p.loadVec8(i), to: SIMD8<UInt32>.self) & exponent) .== exponent
            i += 8
        }
        if any(bad) { return false }
        while i < n { if !p[i].isFinite { return false }; i += 1 }
        return true
    }

    /// Σ a[i]·b[i]
    @inlinable
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var a0 = Vec8(), a1 = Vec8()
        var i = 0
        while i + 16 <= n {
            a0 += a.loadVec8(i) * b.loadVec8(i)
            a1 += a.loadVec8(i + 8) * b.loadVec8(i + 8)
            i += 16
        }
        if i + 8 <= n { a0 += a.loadVec8(i) * b.loadVec8(i); i += 8 }
        var s = (a0 + a1).sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// y[i] += x[i]
    @inlinable
    public static func accumulate(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n { y.storeVec8(y.loadVec8(i) + x.loadVec8(i), i); i += 8 }
        while i < n { y[i] += x[i]; i += 1 }
    }

    /// y[i] = a[i] + b[i]   (y may alias a or b)
    @inlinable
    public static func add(_ y: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n { y.storeVec8(a.loadVec8(i) + b.loadVec8(i), i); i += 8 }
        while i < n { y[i] = a[i] + b[i]; i += 1 }
    }

    /// y[i] *= s
    @inlinable
    public static func scale(_ y: UnsafeMutablePointer<Float>, _ s: Float, _ n: Int) {
        var i = 0
        while i + 8 <= n { y.storeVec8(y.loadVec8(i) * s, i); i += 8 }
        while i < n { y[i] *= s; i += 1 }
    }

    @inlinable
    public static func zero(_ y: UnsafeMutablePointer<Float>, _ n: Int) {
        y.update(repeating: 0, count: n)
    }
}

// MARK: - Residual

public enum Residual {
    /// y: (n) ← a + b
    @inlinable
    public static func forward(_ y: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count n: Int) {
        VectorOps.add(y, a, b, n)
    }

    /// da += dy; db += dy
    @inlinable
    public static func backward(da: UnsafeMutablePointer<Float>, db: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, count n: Int) {
        VectorOps.accumulate(da, dy, n)
        VectorOps.accumulate(db, dy, n)
    }
}

// MARK: - Bias

public enum Bias {
    /// y: (R, C) += b: (C) broadcast over rows
    @inlinable
    public static func forward(_ y: UnsafeMutablePointer<Float>, bias b: UnsafePointer<Float>, rows: Int, cols: Int) {
        for r in 0 ..< rows { VectorOps.accumulate(y + r * cols, b, cols) }
    }

    /// y: (R, C) ← b broadcast (used to pre-load a GEMM output with beta = 1)
    @inlinable
    public static func fill(_ y: UnsafeMutablePointer<Float>, bias b: UnsafePointer<Float>, rows: Int, cols: Int) {
        for r in 0 ..< rows { (y + r * cols).update(from: b, count: cols) }
    }

    /// db: (C) += Σ_rows dy: (R, C)
    @inlinable
    public static func backward(db: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, rows: Int, cols: Int) {
        for r in 0 ..< rows { VectorOps.accumulate(db, dy + r * cols, cols) }
    }
}

// MARK: - LayerNorm

public enum LayerNorm {
    /// y: (R, D) ← (x - μ) / √(σ² + eps) · w + b, per row; σ² biased (as PyTorch).
    /// mean, rstd: (R) are cached for backward.
    @inlinable
    public static func forward(y: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>,
                               rstd: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
                               weight w: UnsafePointer<Float>, bias b: UnsafePointer<Float>,
                               rows: Int, dim d: Int, eps: Float) {
        let invD = 1 / Float(d)
        for r in 0 ..< rows {
            let xr = x + r * d, yr = y + r * d
            let m = VectorOps.sum(xr, d) * invD
            var v8 = Vec8(), i = 0
            while i + 8 <= d { let c = xr.loadVec8(i) - m; v8 += c * c; i += 8 }
            var v = v8.sum()
            while i < d { let c = xr[i] - m; v += c * c; i += 1 }
            let s = 1 / (v * invD + eps).squareRoot()
            mean[r] = m
            rstd[r] = s
            i = 0
            while i + 8 <= d {
                yr.storeVec8((xr.loadVec8(i) - m) * s * w.loadVec8(i) + b.loadVec8(i), i)
                i += 8
            }
            while i < d { yr[i] = (xr[i] - m) * s * w[i] + b[i]; i += 1 }
        }
    }

    /// dx: (R, D) += ∂L/∂x; dweight, dbias: (D) += Σ_rows.
    @inlinable
    public static func backward(dx: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>,
                                dbias: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                                x: UnsafePointer<Float>, mean: UnsafePointer<Float>,
                                rstd: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                                rows: Int, dim d: Int) {
        let invD = 1 / Float(d)
        for r in 0 ..< rows {
            let xr = x + r * d, dyr = dy + r * d, dxr = dx + r * d
            let m = mean[r], s = rstd[r]
            // Pass 1: Σ g and Σ g·x̂ with g = dy·w, and the parameter gradients.
            var sg = Vec8(), sgx = Vec8(), i = 0
            while i + 8 <= d {
                let xh = (xr.loadVec8(i) - m) * s
                let dyv = dyr.loadVec8(i)
                let g = dyv * w.loadVec8(i)
                sg += g
                sgx += g * xh
                dweight.storeVec8(dweight.loadVec8(i) + dyv * xh, i)
                dbias.storeVec8(dbias.loadVec8(i) + dyv, i)
                i += 8
            }
            var sgS = sg.sum(), sgxS = sgx.sum()
            while i < d {
                let xh = (xr[i] - m) * s
                let g = dyr[i] * w[i]
                sgS += g; sgxS += g * xh
                dweight[i] += dyr[i] * xh
                dbias[i] += dyr[i]
                i += 1
            }
            let mg = sgS * invD, mgx = sgxS * invD
            // Pass 2: dx = rstd · (g - mean(g) - x̂ · mean(g·x̂)).
            i = 0
            while i + 8 <= d {
                let xh = (xr.loadVec8(i) - m) * s
                let g = dyr.loadVec8(i) * w.loadVec8(i)
                dxr.storeVec8(dxr.loadVec8(i) + (g - mg - xh * mgx) * s, i)
                i += 8
            }
            while i < d {
                let xh = (xr[i] - m) * s
                let g = dyr[i] * w[i]
                dxr[i] += (g - mg - xh * mgx) * s
                i += 1
            }
        }
    }
}

// MARK: - GELU (exact erf form, as timm's nn.GELU())

public enum GELU {
    /// y: (n) ← x · Φ(x) = ½ x (1 + erf(x/√2))
    @inlinable
    public static func forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count n: Int) {
        var i = 0
        while i + 8 <= n {
            let v = x.loadVec8(i)
            y.storeVec8(v * 0.5 * (1 + SIMDMath.erf(v * invSqrt2)), i)
            i += 8
        }
        if i < n {
            // Tail through the same vector code so every element gets identical math.
            var tmp = Vec8()
            for j in i ..< n { tmp[j - i] = x[j] }
            let out = tmp * 0.5 * (1 + SIMDMath.erf(tmp * invSqrt2))
            for j in i ..< n { y[j] = out[j - i] }
        }
    }

    /// dx: (n) += dy · (Φ(x) + x · φ(x))
    @inlinable
    public static func backward(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, x: UnsafePointer<Float>, count n: Int) {
        @inline(__always) func derivative(_ v: Vec8) -> Vec8 {
            let (e, g) = SIMDMath.erfAndGaussian(v * invSqrt2)  // g = e^(−v²/2)
            return 0.5 * (1 + e) + v * (g * invSqrt2Pi)
        }
        var i = 0
        while i + 8 <= n {
            dx.storeVec8(dx.loadVec8(i) + dy.loadVec8(i) * derivative(x.loadVec8(i)), i)
            i += 8
        }
        if i < n {
            var tmp = Vec8()
            for j in i ..< n { tmp[j - i] = x[j] }
            let g = derivative(tmp)
            for j in i ..< n { dx[j] += dy[j] * g[j - i] }
        }
    }
}

// MARK: - Softmax over rows

public enum Softmax {
    /// y: (R, C) ← softmax(scale · x) per row, max-subtracted. y may alias x.
    @inlinable
    public static func forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                               rows: Int, cols c: Int, scale: Float = 1) {
        for r in 0 ..< rows {
            forwardRow(y + r * c, x + r * c, cols: c, scale: scale)
        }
    }

    @inlinable @inline(__always)
    public static func forwardRow(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, cols c: Int, scale: Float) {
        var mv = Vec8(repeating: -.infinity), i = 0
        while i + 8 <= c { let v = x.loadVec8(i); mv = mv.replacing(with: v, where: v .> mv); i += 8 }
        var m = mv[0]
        for j in 1 ..< 8 where mv[j] > m { m = mv[j] }
        while i < c { m = max(m, x[i]); i += 1 }
        let ms = m * scale
        var sv = Vec8()
        i = 0
        while i + 8 <= c {
            let e = SIMDMath.exp(x.loadVec8(i) * scale - ms)
            y.storeVec8(e, i); sv += e; i += 8
        }
        if i < c {
            var tmp = Vec8(repeating: -.infinity)
            for j in i ..< c { tmp[j - i] = x[j] * scale - ms }
            let e = SIMDMath.exp(tmp)
            for j in i ..< c { y[j] = e[j - i] }
            sv += e
        }
        let inv = 1 / sv.sum()
        VectorOps.scale(y, inv, c)
    }

    /// dx: (R, C) += scale · y ⊙ (dy − Σ dy⊙y) per row.
    @inlinable
    public static func backward(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, y: UnsafePointer<Float>,
                                rows: Int, cols c: Int, scale: Float = 1) {
        for r in 0 ..< rows {
            let yr = y + r * c, dyr = dy + r * c, dxr = dx + r * c
            let d = VectorOps.dot(dyr, yr, c)
            var i = 0
            while i + 8 <= c {
                dxr.storeVec8(dxr.loadVec8(i) + scale * yr.loadVec8(i) * (dyr.loadVec8(i) - d), i)
                i += 8
            }
            while i < c { dxr[i] += scale * yr[i] * (dyr[i] - d); i += 1 }
        }
    }
}

// MARK: - Softmax cross-entropy with label smoothing

/// Mixup/CutMix targets: row r's target is weight[r] of its label and 1 − weight[r] of
/// `labels[r]` here (timm's `mixup_target`, each one-hot smoothed alike).
public struct MixedTargets: @unchecked Sendable {
    public let labels: UnsafePointer<Int32>
    public let weights: UnsafePointer<Float>
    public init(labels: UnsafePointer<Int32>, weights: UnsafePointer<Float>) { self.labels = labels; self.weights = weights }
    /// The same targets from row `rows` on.
    public func advanced(by rows: Int) -> MixedTargets { MixedTargets(labels: labels + rows, weights: weights + rows) }
}

public enum CrossEntropy {
    /// probs: (R, C) ← softmax(logits); returns Σ_rows of −Σ_c q_c log p_c with
    /// q = (1 − ε)·onehot(label) + ε/C (timm's LabelSmoothingCrossEntropy), or with `mix`
    /// q = (1 − ε)·(λ·onehot(label) + (1 − λ)·onehot(label₂)) + ε/C (timm's
    /// SoftTargetCrossEntropy on mixup_target). Computed in Double from log-sum-exp so it
    /// never takes log of an underflowed probability.
    public static func forward(probs: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>,
                               labels: UnsafePointer<Int32>, rows: Int, classes c: Int,
                               smoothing eps: Float, mix: MixedTargets? = nil) -> Double {
        var total = 0.0
        for r in 0 ..< rows {
            let lr = logits + r * c, pr = probs + r * c
            let label = Int(labels[r])
            precondition(label >= 0 && label < c, "CrossEntropy: label \(label) outside 0..<\(c)")
            var m = -Float.infinity
            for j in 0 ..< c { m = max(m, lr[j]) }
            var s = 0.0
            for j in 0 ..< c { s += _exp(Double(lr[j] - m)) }
            let logZ = Double(m) + _log(s)
            var meanLogit = 0.0
            for j in 0 ..< c {
                pr[j] = Float(_exp(Double(lr[j]) - logZ))
                meanLogit += Double(lr[j])
            }
            meanLogit /= Double(c)
            var nll = logZ - Double(lr[label])
            if let mix {
                let other = Int(mix.labels[r]), w = Double(mix.weights[r])
                precondition(other >= 0 && other < c, "CrossEntropy: mixed label \(other) outside 0..<\(c)")
                nll = w * nll + (1 - w) * (logZ - Double(lr[other]))
            }
            let smooth = logZ - meanLogit
            total += (1 - Double(eps)) * nll + Double(eps) * smooth
        }
        return total
    }

    /// dlogits: (R, C) += scale · (p − q)
    public static func backward(dlogits: UnsafeMutablePointer<Float>, probs: UnsafePointer<Float>,
                                labels: UnsafePointer<Int32>, rows: Int, classes c: Int,
                                smoothing eps: Float, scale: Float, mix: MixedTargets? = nil) {
        let off = eps / Float(c)
        for r in 0 ..< rows {
            let pr = probs + r * c, dr = dlogits + r * c
            let label = Int(labels[r])
            if let mix {
                let other = Int(mix.labels[r]), w = mix.weights[r]
                for j in 0 ..< c {
                    let hot = (j == label ? w : 0) + (j == other ? 1 - w : 0)
                    let q = (1 - eps) * hot + off
                    dr[j] += scale * (pr[j] - q)
                }
                continue
            }
            for j in 0 ..< c {
                let q = (j == label ? 1 - eps : 0) + off
                dr[j] += scale * (pr[j] - q)
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
@usableFromInline func _exp(_ x: Double) -> Double { Glibc.exp(x) }
#elseif canImport(Darwin)
import Darwin
@usableFromInline func _exp(_ x: Double) -> Double { Darwin.exp(x) }
#endif

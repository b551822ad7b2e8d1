/// A fully connected layer in PyTorch's convention: weight (O, I), y = x·Wᵀ + b.
public enum Linear {
    /// y: (R, O) ← x: (R, I) · wᵀ: (I, O) + b: (O)
    @inlinable
    public static func forward(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
                               weight w: UnsafePointer<Float>, bias b: UnsafePointer<Float>?,
                               rows: Int, inFeatures i: Int, outFeatures o: Int) {
        var beta: Float = 0
        if let b { Bias.fill(y, bias: b, rows: rows, cols: o); beta = 1 }
        BLAS.sgemm(transA: false, transB: true, m: rows, n: o, k: i, alpha: 1,
                   a: x, lda: i, b: w, ldb: i, beta: beta, c: y, ldc: o)
    }

    /// dx: (R, I) += dy·w (skipped when nil); dweight: (O, I) += dyᵀ·x; dbias: (O) += Σ dy
    @inlinable
    public static func backward(dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>,
                                dbias: UnsafeMutablePointer<Float>?, dy: UnsafePointer<Float>,
                                x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                                rows: Int, inFeatures i: Int, outFeatures o: Int) {
        if let dx {
            BLAS.sgemm(transA: false, transB: false, m: rows, n: i, k: o, alpha: 1,
                       a: dy, lda: o, b: w, ldb: i, beta: 1, c: dx, ldc: i)
        }
        BLAS.sgemm(transA: true, transB: false, m: o, n: i, k: rows, alpha: 1,
                   a: dy, lda: o, b: x, ldb: i, beta: 1, c: dweight, ldc: i)
        if let dbias { Bias.backward(db: dbias, dy: dy, rows: rows, cols: o) }
    }
}

/// Multi-head self-attention core on a fused qkv tensor laid out as timm's
/// `qkv.reshape(B, N, 3, H, hd)`: channel o of a token is (which = o / D, head =
/// (o % D) / hd, dim = o % hd). Per (batch, head) the products run through sgemm with
/// strides straight into the fused tensor, so nothing is copied or transposed.
public enum Attention {
    /// out: (B, N, D) ← per head softmax(q·kᵀ / √hd)·v
    /// probs: (B, H, N, N) cached for backward
    /// qkv: (B, N, 3D)
    @inlinable
    public static func forward(out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>,
                               qkv: UnsafePointer<Float>, batch: Int, tokens n: Int,
                               heads: Int, headDim hd: Int) {
        let d = heads * hd, ld = 3 * d
        let scale = 1 / Float(hd).squareRoot()
        for b in 0 ..< batch {
            let base = qkv + b * n * ld
            for h in 0 ..< heads {
                let q = base + h * hd, k = base + d + h * hd, v = base + 2 * d + h * hd
                let p = probs + (b * heads + h) * n * n
                // scores (N, N) = q · kᵀ (the 1/√hd scale is folded into the softmax)
                BLAS.sgemm(transA: false, transB: true, m: n, n: n, k: hd, alpha: 1,
                           a: q, lda: ld, b: k, ldb: ld, beta: 0, c: p, ldc: n)
                Softmax.forward(p, p, rows: n, cols: n, scale: scale)
                // out[:, h·hd ..< (h+1)·hd] (N, hd) = p · v
                BLAS.sgemm(transA: false, transB: false, m: n, n: hd, k: n, alpha: 1,
                           a: p, lda: n, b: v, ldb: ld, beta: 0, c: out + b * n * d + h * hd, ldc: d)
            }
        }
    }

    /// dqkv: (B, N, 3D) += ∂L/∂qkv
    /// scratch: (N, N) per call (holds ∂L/∂probs, then ∂L/∂scores of one head)
    /// dout: (B, N, D), probs: (B, H, N, N), qkv: (B, N, 3D)
    @inlinable
    public static func backward(dqkv: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                                dout: UnsafePointer<Float>, probs: UnsafePointer<Float>,
                                qkv: UnsafePointer<Float>, batch: Int, tokens n: Int,
                                heads: Int, headDim hd: Int) {
        let d = heads * hd, ld = 3 * d
        let scale = 1 / Float(hd).squareRoot()
        for b in 0 ..< batch {
            let base = qkv + b * n * ld, dbase = dqkv + b * n * ld
            for h in 0 ..< heads {
                let q = base + h * hd, k = base + d + h * hd, v = base + 2 * d + h * hd
                let dq = dbase + h * hd, dk = dbase + d + h * hd, dv = dbase + 2 * d + h * hd
                let p = probs + (b * heads + h) * n * n
                let dO = dout + b * n * d + h * hd
                // dP (N, N) = dO · vᵀ
                BLAS.sgemm(transA: false, transB: true, m: n, n: n, k: hd, alpha: 1,
                           a: dO, lda: d, b: v, ldb: ld, beta: 0, c: scratch, ldc: n)
                // dv (N, hd) += pᵀ · dO
                BLAS.sgemm(transA: true, transB: false, m: n, n: hd, k: n, alpha: 1,
                           a: p, lda: n, b: dO, ldb: d, beta: 1, c: dv, ldc: ld)
                // dS = p ⊙ (dP − rowsum(dP ⊙ p)), in place, without the scale
                for r in 0 ..< n {
                    let pr = p + r * n, sr = scratch + r * n
                    let dotv = VectorOps.dot(sr, pr, n)
                    var i = 0
                    while i + 8 <= n { sr.storeVec8(pr.loadVec8(i) * (sr.loadVec8(i) - dotv), i); i += 8 }
                    while i < n { sr[i] = pr[i] * (sr[i] - dotv); i += 1 }
                }
                // dq (N, hd) += scale · dS · k ; dk (N, hd) += scale · dSᵀ · q
                BLAS.sgemm(transA: false, transB: false, m: n, n: hd, k: n, alpha: scale,
                           a: scratch, lda: n, b: k, ldb: ld, beta: 1, c: dq, ldc: ld)
                BLAS.sgemm(transA: true, transB: false, m: n, n: hd, k: n, alpha: scale,
                           a: scratch, lda: n, b: q, ldb: ld, beta: 1, c: dk, ldc: ld)
            }
        }
    }
}

extension Linear {
    /// y: (R, O) ← residual: (R, O) + x·wᵀ + b — the residual add folded into the GEMM's
    /// beta so the output is written once.
    @inlinable
    public static func forwardResidual(y: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>,
                                       x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                                       bias b: UnsafePointer<Float>?, rows: Int, inFeatures i: Int, outFeatures o: Int) {
        for r in 0 ..< rows {
            if let b { VectorOps.add(y + r * o, residual + r * o, b, o) } else { (y + r * o).update(from: residual + r * o, count: o) }
        }
        BLAS.sgemm(transA: false, transB: true, m: rows, n: o, k: i, alpha: 1,
                   a: x, lda: i, b: w, ldb: i, beta: 1, c: y, ldc: o)
    }
}

/// A fully connected layer in PyTorch's convention: weight (O, I), y = x·Wᵀ + b.
public enum Linear {
    /// y: (R, O) ← x: (R, I) · wᵀ: (I, O) + b: (O)
    @inlinable
    public static func forward(y: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>,
                               weight w: UnsafePointer<Float>, bias b: UnsafePointer<Float>?,
                               rows: Int, inFeatures i: Int, outFeatures o: Int, mode: MatMulMode = .fp32) {
        var beta: Float = 0
        if let b { Bias.fill(y, bias: b, rows: rows, cols: o); beta = 1 }
        MatMul.gemm(transA: false, transB: true, m: rows, n: o, k: i, alpha: 1,
                    a: x, lda: i, b: w, ldb: i, beta: beta, c: y, ldc: o, mode: mode)
    }

    /// dx: (R, I) += dy·w (skipped when nil); dweight: (O, I) += dyᵀ·x; dbias: (O) += Σ dy
    @inlinable
    public static func backward(dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>,
                                dbias: UnsafeMutablePointer<Float>?, dy: UnsafePointer<Float>,
                                x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                                rows: Int, inFeatures i: Int, outFeatures o: Int, mode: MatMulMode = .fp32) {
        if mode.precision == .bf16 && dx != nil {
            // dy feeds both products: converted to bf16 once.
            let g = MatMul.operand(dy, count: rows * o, mode: mode, slot: 3)
            let (sdy, sw) = MatMul.operands(transA: false, transB: false, m: rows, n: i, k: o, lda: o, ldb: i)
            MatMul.batched(a: g, sdy, b: .fp32(w), sw, c: dx!, StridedOperand(rows: rows, cols: i, rowStride: i),
                           alpha: 1, beta: 1, mode: mode)
            let (sdyT, sx) = MatMul.operands(transA: true, transB: false, m: o, n: i, k: rows, lda: o, ldb: i)
            MatMul.batched(a: g, sdyT, b: .fp32(x), sx, c: dweight, StridedOperand(rows: o, cols: i, rowStride: i),
                           alpha: 1, beta: 1, mode: mode)
        } else {
            if let dx {
                MatMul.gemm(transA: false, transB: false, m: rows, n: i, k: o, alpha: 1,
                            a: dy, lda: o, b: w, ldb: i, beta: 1, c: dx, ldc: i, mode: mode)
            }
            MatMul.gemm(transA: true, transB: false, m: o, n: i, k: rows, alpha: 1,
                        a: dy, lda: o, b: x, ldb: i, beta: 1, c: dweight, ldc: i, mode: mode)
        }
        if let dbias { Bias.backward(db: dbias, dy: dy, rows: rows, cols: o) }
    }
}

/// Multi-head self-attention core on a fused qkv tensor laid out as timm's
/// `qkv.reshape(B, N, 3, H, hd)`: channel o of a token is (which = o / D, head =
/// (o % D) / hd, dim = o % hd). Each product runs once for every (image, head) pair as
/// one batched call with strides straight into the fused tensor, so nothing is copied
/// or transposed (on oneDNN one primitive call; on OpenBLAS one sgemm per head).
public enum Attention {
    /// The (B, H) grid of one head's q, k or v: (N, hd) at column offset `which`·D + h·hd.
    @inlinable
    static func head(_ b: Int, _ heads: Int, _ n: Int, _ hd: Int, transposed: Bool = false) -> StridedOperand {
        let ld = 3 * heads * hd
        return transposed
            ? StridedOperand(batch: b, heads: heads, rows: hd, cols: n, batchStride: n * ld, headStride: hd, rowStride: 1, colStride: ld)
            : StridedOperand(batch: b, heads: heads, rows: n, cols: hd, batchStride: n * ld, headStride: hd, rowStride: ld)
    }

    /// (B, H) of (N, N) matrices stored densely, (B, H, N, N); transposed reads each as its transpose.
    @inlinable
    static func square(_ b: Int, _ heads: Int, _ n: Int, transposed: Bool = false) -> StridedOperand {
        StridedOperand(batch: b, heads: heads, rows: n, cols: n, batchStride: heads * n * n, headStride: n * n,
                       rowStride: transposed ? 1 : n, colStride: transposed ? n : 1)
    }

    /// (B, H) of (N, hd) head slices of a (B, N, D) tensor.
    @inlinable
    static func output(_ b: Int, _ heads: Int, _ n: Int, _ hd: Int) -> StridedOperand {
        StridedOperand(batch: b, heads: heads, rows: n, cols: hd, batchStride: n * heads * hd, headStride: hd, rowStride: heads * hd)
    }

    /// out: (B, N, D) ← per head softmax(q·kᵀ / √hd + keyBias)·v
    /// probs: (B, H, N, N) cached for backward
    /// qkv: (B, N, 3D); keyBias: (B, N) added to every query's logit for key j, or nil.
    /// (Its gradient is the column sum of the ∂L/∂logits that backward leaves in scratch.)
    @inlinable
    public static func forward(out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>,
                               qkv: UnsafePointer<Float>, batch: Int, tokens n: Int,
                               heads: Int, headDim hd: Int, mode: MatMulMode = .fp32,
                               keyBias: UnsafePointer<Float>? = nil) {
        let d = heads * hd
        let scale = 1 / Float(hd).squareRoot()
        // In bf16, qkv is converted once for its three uses.
        let t = MatMul.operand(qkv, count: batch * n * 3 * d, mode: mode, slot: 0)
        // scores (B, H, N, N) = q · kᵀ (the 1/√hd scale is folded into the softmax)
        MatMul.batched(a: t, head(batch, heads, n, hd), b: t.advanced(by: d), head(batch, heads, n, hd, transposed: true),
                       c: probs, square(batch, heads, n), alpha: 1, beta: 0, mode: mode)
        if let keyBias {
            // The softmax scales its input by 1/√hd, so the bias goes in divided by it.
            let unscaled = (0 ..< batch * n).map { keyBias[$0] / scale }
            for b in 0 ..< batch {
                for r in 0 ..< heads * n {
                    let row = probs + (b * heads * n + r) * n
                    for j in 0 ..< n { row[j] += unscaled[b * n + j] }
                }
            }
        }
        Softmax.forward(probs, probs, rows: batch * heads * n, cols: n, scale: scale)
        // out[b, :, h·hd ..< (h+1)·hd] (N, hd) = p · v
        MatMul.batched(a: .fp32(probs), square(batch, heads, n), b: t.advanced(by: 2 * d), head(batch, heads, n, hd),
                       c: out, output(batch, heads, n, hd), alpha: 1, beta: 0, mode: mode)
    }

    /// dqkv: (B, N, 3D) += ∂L/∂qkv
    /// scratch: (B, H, N, N) (holds ∂L/∂probs, then ∂L/∂scores)
    /// dout: (B, N, D), probs: (B, H, N, N), qkv: (B, N, 3D)
    @inlinable
    public static func backward(dqkv: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                                dout: UnsafePointer<Float>, probs: UnsafePointer<Float>,
                                qkv: UnsafePointer<Float>, batch: Int, tokens n: Int,
                                heads: Int, headDim hd: Int, mode: MatMulMode = .fp32) {
        let d = heads * hd
        let scale = 1 / Float(hd).squareRoot()
        let dO = output(batch, heads, n, hd)
        // In bf16, qkv, dout and dS are each converted once for their two or three uses.
        let t = MatMul.operand(qkv, count: batch * n * 3 * d, mode: mode, slot: 0)
        let g = MatMul.operand(dout, count: batch * n * d, mode: mode, slot: 1)
        // dP (B, H, N, N) = dO · vᵀ
        MatMul.batched(a: g, dO, b: t.advanced(by: 2 * d), head(batch, heads, n, hd, transposed: true),
                       c: scratch, square(batch, heads, n), alpha: 1, beta: 0, mode: mode)
        // dv (N, hd) += pᵀ · dO
        MatMul.batched(a: .fp32(probs), square(batch, heads, n, transposed: true), b: g, dO,
                       c: dqkv + 2 * d, head(batch, heads, n, hd), alpha: 1, beta: 1, mode: mode)
        // dS = p ⊙ (dP − rowsum(dP ⊙ p)), in place, without the scale
        for r in 0 ..< batch * heads * n {
            let pr = probs + r * n, sr = scratch + r * n
            let dotv = VectorOps.dot(sr, pr, n)
            var i = 0
            while i + 8 <= n { sr.storeVec8(pr.loadVec8(i) * (sr.loadVec8(i) - dotv), i); i += 8 }
            while i < n { sr[i] = pr[i] * (sr[i] - dotv); i += 1 }
        }
        // dq (N, hd) += scale · dS · k ; dk (N, hd) += scale · dSᵀ · q
        let s = MatMul.operand(scratch, count: batch * heads * n * n, mode: mode, slot: 2)
        MatMul.batched(a: s, square(batch, heads, n), b: t.advanced(by: d), head(batch, heads, n, hd),
                       c: dqkv, head(batch, heads, n, hd), alpha: scale, beta: 1, mode: mode)
        MatMul.batched(a: s, square(batch, heads, n, transposed: true), b: t, head(batch, heads, n, hd),
                       c: dqkv + d, head(batch, heads, n, hd), alpha: scale, beta: 1, mode: mode)
    }
}

extension Linear {
    /// y: (R, O) ← residual: (R, O) + x·wᵀ + b — the residual add folded into the GEMM's
    /// beta so the output is written once.
    @inlinable
    public static func forwardResidual(y: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>,
                                       x: UnsafePointer<Float>, weight w: UnsafePointer<Float>,
                                       bias b: UnsafePointer<Float>?, rows: Int, inFeatures i: Int, outFeatures o: Int,
                                       mode: MatMulMode = .fp32) {
        for r in 0 ..< rows {
            if let b { VectorOps.add(y + r * o, residual + r * o, b, o) } else { (y + r * o).update(from: residual + r * o, count: o) }
        }
        MatMul.gemm(transA: false, transB: true, m: rows, n: o, k: i, alpha: 1,
                    a: x, lda: i, b: w, ldb: i, beta: 1, c: y, ldc: o, mode: mode)
    }
}

/// Which library computes the fp32 matrix products.
public enum GEMMBackend: String, Sendable, CaseIterable, Codable {
    case onednn, openblas
}

/// The operand type of the matrix products. bf16 rounds both operands of every product
/// (linear layers and attention) to bfloat16 and accumulates in fp32; master weights,
/// gradients, the optimizer and every norm/softmax statistic stay fp32.
public enum Precision: String, Sendable, CaseIterable, Codable {
    case fp32, bf16
}

/// How a pass computes its matrix products: the operand precision and, for fp32, the
/// backend (nil: the process's choice, `MatMul.backend`). Tests name a backend here
/// instead of changing the process-wide one.
public struct MatMulMode: Sendable, Hashable, CustomStringConvertible {
    public var precision: Precision
    public var backend: GEMMBackend?

    public init(_ precision: Precision = .fp32, backend: GEMMBackend? = nil) {
        self.precision = precision; self.backend = backend
    }

    public static let fp32 = MatMulMode(.fp32)
    public static let bf16 = MatMulMode(.bf16)

    /// fp32 on the same backend: for the products that stay fp32 in a bf16 pass.
    public var fp32: MatMulMode { MatMulMode(.fp32, backend: backend) }

    public var description: String { "\(precision.rawValue)\(backend.map { " on \($0.rawValue)" } ?? "")" }
}

/// A matrix operand's data: fp32, or already converted to bf16 (a caller that feeds the
/// same tensor to several products converts it once).
public enum MatrixData {
    case fp32(UnsafePointer<Float>)
    case bf16(UnsafePointer<UInt16>)

    /// The same data `offset` elements on.
    @inlinable
    public func advanced(by offset: Int) -> MatrixData {
        switch self {
        case .fp32(let p): .fp32(p + offset)
        case .bf16(let p): .bf16(p + offset)
        }
    }
}

/// The one funnel every matrix product goes through. Row-major throughout; shapes and
/// leading dimensions are checked so a wrong size stops with a message naming the call
/// instead of reading past a buffer. fp32 products go to `backend`; bf16 products go to
/// oneDNN's matmul primitive (Debian's OpenBLAS is built without bfloat16).
public enum MatMul {
    /// Set once at start-up by `Engine.configure`; oneDNN unless told otherwise.
    nonisolated(unsafe) public static var backend: GEMMBackend = .onednn

    /// C = alpha · op(A) · op(B) + beta · C; op(A) is m×k, op(B) is k×n, C is m×n.
    @inlinable
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                            alpha: Float, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int,
                            beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int,
                            mode: MatMulMode = .fp32) {
        precondition(m >= 0 && n >= 0 && k >= 0, "gemm: negative size m=\(m) n=\(n) k=\(k)")
        precondition(lda >= max(1, transA ? m : k), "gemm: lda=\(lda) too small for \(transA ? "Aᵀ" : "A") with m=\(m) k=\(k)")
        precondition(ldb >= max(1, transB ? k : n), "gemm: ldb=\(ldb) too small for \(transB ? "Bᵀ" : "B") with k=\(k) n=\(n)")
        precondition(ldc >= max(1, n), "gemm: ldc=\(ldc) smaller than n=\(n)")
        if m == 0 || n == 0 { return }
        if k == 0 {
            for i in 0 ..< m { if beta == 0 { (c + i * ldc).update(repeating: 0, count: n) } else { VectorOps.scale(c + i * ldc, beta, n) } }
            return
        }
        switch (mode.precision, mode.backend ?? backend) {
        case (.fp32, .openblas):
            BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                       b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        case (.fp32, .onednn):
            do {
                try OneDNN.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                                 b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            } catch { preconditionFailure("\(error)") }
        case (.bf16, _):
            let (sa, sb) = operands(transA: transA, transB: transB, m: m, n: n, k: k, lda: lda, ldb: ldb)
            batched(a: .fp32(a), sa, b: .fp32(b), sb, c: c, StridedOperand(rows: m, cols: n, rowStride: ldc),
                    alpha: alpha, beta: beta, mode: mode)
        }
    }

    /// The strided descriptions of op(A) (m×k) and op(B) (k×n) stored row-major.
    @inlinable
    public static func operands(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, lda: Int, ldb: Int)
        -> (StridedOperand, StridedOperand) {
        (transA ? StridedOperand(rows: m, cols: k, rowStride: 1, colStride: lda) : StridedOperand(rows: m, cols: k, rowStride: lda),
         transB ? StridedOperand(rows: k, cols: n, rowStride: 1, colStride: ldb) : StridedOperand(rows: k, cols: n, rowStride: ldb))
    }

    /// C[b,h] = alpha·A[b,h]·B[b,h] + beta·C[b,h] over a batch × heads grid of products,
    /// each operand addressed by its strides (so heads can be read straight out of a fused
    /// qkv tensor). On oneDNN this is one primitive call; on OpenBLAS one sgemm per product.
    public static func batched(a: MatrixData, _ sa: StridedOperand, b: MatrixData, _ sb: StridedOperand,
                               c: UnsafeMutablePointer<Float>, _ sc: StridedOperand,
                               alpha: Float, beta: Float, mode: MatMulMode = .fp32) {
        precondition(sa.rows == sc.rows && sb.cols == sc.cols && sa.cols == sb.rows,
                     "batched: shapes \(sa.rows)×\(sa.cols) · \(sb.rows)×\(sb.cols) → \(sc.rows)×\(sc.cols) do not chain")
        precondition(sa.batch == sc.batch && sb.batch == sc.batch && sa.heads == sc.heads && sb.heads == sc.heads,
                     "batched: batch grids differ (\(sa.batch)×\(sa.heads), \(sb.batch)×\(sb.heads), \(sc.batch)×\(sc.heads))")
        if sc.span == 0 { return }
        let useDNNL = mode.precision == .bf16 || (mode.backend ?? backend) == .onednn
        if !useDNNL || sa.cols == 0 {
            guard case .fp32(let pa) = a, case .fp32(let pb) = b else { preconditionFailure("batched: bf16 operands need precision bf16") }
            for bi in 0 ..< sc.batch {
                for h in 0 ..< sc.heads {
                    let oa = bi * sa.batchStride + h * sa.headStride, ob = bi * sb.batchStride + h * sb.headStride
                    let oc = bi * sc.batchStride + h * sc.headStride
                    let (ta, lda) = sa.colStride == 1 ? (false, sa.rowStride) : (true, sa.colStride)
                    let (tb, ldb) = sb.colStride == 1 ? (false, sb.rowStride) : (true, sb.colStride)
                    gemm(transA: ta, transB: tb, m: sc.rows, n: sc.cols, k: sa.cols, alpha: alpha, a: pa + oa, lda: lda,
                         b: pb + ob, ldb: ldb, beta: beta, c: c + oc, ldc: sc.rowStride, mode: mode)
                }
            }
            return
        }
        do {
            let ctx = try OneDNNThreadContext.current()
            let bf16 = mode.precision == .bf16
            func prepare(_ data: MatrixData, _ s: StridedOperand, _ buffer: inout GrowableBuffer<UInt16>) -> UnsafeRawPointer {
                switch (data, bf16) {
                case (.fp32(let p), false): return UnsafeRawPointer(p)
                case (.bf16(let p), true): return UnsafeRawPointer(p)
                case (.fp32(let p), true):
                    let dst = buffer.reserve(s.span)
                    BF16.convert(dst, p, count: s.span)
                    return UnsafeRawPointer(dst)
                case (.bf16, false): preconditionFailure("batched: bf16 operands need precision bf16")
                }
            }
            let pa = prepare(a, sa, &ctx.bf16A), pb = prepare(b, sb, &ctx.bf16B)
            try OneDNN.matmul(src: pa, sa, weights: pb, sb, dst: c, sc, bf16: bf16, alpha: alpha, beta: beta, context: ctx)
        } catch { preconditionFailure("\(error)") }
    }

    /// `data` as a product operand in `mode`'s precision: fp32 as it is, or for bf16 its first
    /// `count` values converted into this thread's buffer `slot` (0..<4), valid until the
    /// same slot is asked for again on this thread. For a tensor that feeds several
    /// products (qkv feeds three), so it is converted once.
    public static func operand(_ data: UnsafePointer<Float>, count: Int, mode: MatMulMode, slot: Int) -> MatrixData {
        guard mode.precision == .bf16 else { return .fp32(data) }
        do {
            let ctx = try OneDNNThreadContext.current()
            let dst = ctx.kept[slot].reserve(count)
            BF16.convert(dst, data, count: count)
            return .bf16(UnsafePointer(dst))
        } catch { preconditionFailure("\(error)") }
    }

    /// Threads the products may use when called from this thread: 1 inside a lane (the
    /// lanes are the parallelism), all of them when one lane runs alone.
    public static func setThreadsForCallingThread(_ n: Int, backend chosen: GEMMBackend? = nil) {
        OneDNN.setThreadsForCallingThread(n)
        // OpenBLAS's count is process-wide; every lane asks for the same one.
        if (chosen ?? backend) == .openblas, BLAS.threads != n { BLAS.setThreads(n) }
    }
}

import CBLAS

/// The one door to OpenBLAS. Matrices are row-major `Float`; every call checks its
/// shapes and leading dimensions so that a wrong size stops with a message that names
/// the call instead of reading past a buffer.
public enum BLAS {
    /// Sets OpenBLAS's own thread count (its pool is global to the process).
    public static func setThreads(_ count: Int) {
        precondition(count >= 1, "BLAS.setThreads: thread count must be >= 1, got \(count)")
        openblas_set_num_threads(Int32(count))
    }

    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// The kernel family OpenBLAS chose for this CPU (e.g. "SkylakeX", "Haswell", "Zen").
    public static var coreName: String { String(cString: openblas_get_corename()) }

    public static var configDescription: String { String(cString: openblas_get_config()) }

    /// C = alpha · op(A) · op(B) + beta · C, all row-major.
    /// op(A) is m×k, op(B) is k×n, C is m×n.
    @inlinable
    public static func sgemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        alpha: Float, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative size m=\(m) n=\(n) k=\(k)")
        precondition(lda >= max(1, transA ? m : k), "sgemm: lda=\(lda) too small for \(transA ? "Aᵀ" : "A") with m=\(m) k=\(k)")
        precondition(ldb >= max(1, transB ? k : n), "sgemm: ldb=\(ldb) too small for \(transB ? "Bᵀ" : "B") with k=\(k) n=\(n)")
        precondition(ldc >= max(1, n), "sgemm: ldc=\(ldc) smaller than n=\(n)")
        if m == 0 || n == 0 { return }
        cblas_sgemm(CblasRowMajor,
                    transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb),
                    beta, c, Int32(ldc))
    }

    /// The checked form for callers holding buffers: verifies that every operand is
    /// large enough for the shape before calling OpenBLAS.
    public static func sgemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        alpha: Float, a: UnsafeBufferPointer<Float>, lda: Int,
        b: UnsafeBufferPointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutableBufferPointer<Float>, ldc: Int
    ) {
        func need(rows: Int, cols: Int, ld: Int) -> Int { rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols }
        let needA = need(rows: transA ? k : m, cols: transA ? m : k, ld: lda)
        let needB = need(rows: transB ? n : k, cols: transB ? k : n, ld: ldb)
        let needC = need(rows: m, cols: n, ld: ldc)
        precondition(a.count >= needA, "sgemm: A holds \(a.count) floats, shape needs \(needA)")
        precondition(b.count >= needB, "sgemm: B holds \(b.count) floats, shape needs \(needB)")
        precondition(c.count >= needC, "sgemm: C holds \(c.count) floats, shape needs \(needC)")
        guard m > 0, n > 0 else { return }
        sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
              a: a.baseAddress!, lda: lda, b: b.baseAddress!, ldb: ldb,
              beta: beta, c: c.baseAddress!, ldc: ldc)
    }
}

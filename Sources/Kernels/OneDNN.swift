import CDNNL
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A failed oneDNN call: which call, and the status it returned.
public struct DNNLError: Error, CustomStringConvertible, Sendable {
    public let call: String
    public let status: UInt32

    public init(call: String, status: UInt32) { self.call = call; self.status = status }

    public var description: String {
        let name: String = switch dnnl_status_t(rawValue: status) {
        case dnnl_out_of_memory: "out of memory"
        case dnnl_invalid_arguments: "invalid arguments"
        case dnnl_unimplemented: "unimplemented (no kernel for these shapes and types on this CPU)"
        case dnnl_runtime_error: "runtime error"
        default: "status \(status)"
        }
        return "oneDNN: \(call) failed: \(name)"
    }
}

/// The one door to oneDNN: every call goes through `check`, which turns a status into
/// a `DNNLError` naming the call. Matrix products come in two forms: `dnnl_sgemm` for
/// fp32 (no set-up cost) and the matmul primitive, which takes bf16 operands, batches
/// of products with any strides, and an fp32 result; primitives are made once per
/// shape and calling thread, and reused.
public enum OneDNN {
    @inlinable
    static func check(_ status: dnnl_status_t, _ call: @autoclosure () -> String) throws(DNNLError) {
        if status != dnnl_success { throw DNNLError(call: call(), status: status.rawValue) }
    }

    /// The CPU engine, made once; nil (with the reason) when oneDNN cannot make one.
    nonisolated(unsafe) static let engineResult: Result<OpaquePointer, DNNLError> = {
        var e: OpaquePointer?
        do throws(DNNLError) {
            try check(dnnl_engine_create(&e, dnnl_cpu, 0), "dnnl_engine_create(cpu, 0)")
            return .success(e!)
        } catch { return .failure(error) }
    }()

    static func engine() throws(DNNLError) -> OpaquePointer { try engineResult.get() }

    /// "2.6.3 (OpenMP)"
    public static var version: String {
        let v = dnnl_version()!.pointee
        return "\(v.major).\(v.minor).\(v.patch)"
    }

    /// The most capable instruction set oneDNN's kernels use on this CPU, in its words
    /// (it reads the CPU's features itself, at run time).
    public static var effectiveISA: String {
        switch dnnl_get_effective_cpu_isa() {
        case dnnl_cpu_isa_avx512_core_amx: "avx512_core_amx"
        case dnnl_cpu_isa_avx512_core_bf16: "avx512_core_bf16"
        case dnnl_cpu_isa_avx512_core_vnni: "avx512_core_vnni"
        case dnnl_cpu_isa_avx512_core: "avx512_core"
        case dnnl_cpu_isa_avx2_vnni: "avx2_vnni"
        case dnnl_cpu_isa_avx2: "avx2"
        case dnnl_cpu_isa_avx: "avx"
        case dnnl_cpu_isa_sse41: "sse41"
        default: "unknown"
        }
    }

    /// The level of `effectiveISA`, to compare with what the CPU offers.
    public static var effectiveLevel: ISALevel {
        switch dnnl_get_effective_cpu_isa() {
        case dnnl_cpu_isa_avx512_core_amx: .amx
        case dnnl_cpu_isa_avx512_core_bf16: .avx512bf16
        case dnnl_cpu_isa_avx512_core_vnni, dnnl_cpu_isa_avx512_core: .avx512
        case dnnl_cpu_isa_avx2_vnni, dnnl_cpu_isa_avx2: .avx2
        case dnnl_cpu_isa_avx: .avx
        default: .sse3
        }
    }

    /// Sets how many OpenMP threads oneDNN uses for calls made from *this* thread (an
    /// OpenMP setting is per calling thread): 1 inside a lane, the lane count otherwise.
    public static func setThreadsForCallingThread(_ n: Int) {
        omp_set_num_threads(Int32(max(1, n)))
    }

    /// C = alpha·op(A)·op(B) + beta·C in fp32, row-major.
    @inlinable
    public static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                             alpha: Float, a: UnsafePointer<Float>, lda: Int,
                             b: UnsafePointer<Float>, ldb: Int,
                             beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) throws(DNNLError) {
        let ta: CChar = transA ? 84 : 78, tb: CChar = transB ? 84 : 78   // "T" : "N"
        try check(dnnl_sgemm(ta, tb, Int64(m), Int64(n), Int64(k), alpha, a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc)),
                  "dnnl_sgemm(\(transA ? "T" : "N"), \(transB ? "T" : "N"), m \(m), n \(n), k \(k), lda \(lda), ldb \(ldb), ldc \(ldc))")
    }
}

// MARK: - the matmul primitive

/// One operand of a batched product: dims and strides in elements, outermost first.
/// A matrix of `rows` × `cols` is batch × heads of them, each at `batchStride`/`headStride`.
public struct StridedOperand: Hashable, Sendable {
    public var batch: Int, heads: Int, rows: Int, cols: Int
    public var batchStride: Int, headStride: Int, rowStride: Int, colStride: Int

    public init(batch: Int = 1, heads: Int = 1, rows: Int, cols: Int,
                batchStride: Int = 0, headStride: Int = 0, rowStride: Int, colStride: Int = 1) {
        self.batch = batch; self.heads = heads; self.rows = rows; self.cols = cols
        self.batchStride = batchStride; self.headStride = headStride; self.rowStride = rowStride; self.colStride = colStride
    }

    /// Elements from the first to one past the last element addressed.
    public var span: Int {
        guard batch > 0, heads > 0, rows > 0, cols > 0 else { return 0 }
        return (batch - 1) * batchStride + (heads - 1) * headStride + (rows - 1) * rowStride + (cols - 1) * colStride + 1
    }
}

/// What makes two matmul primitives the same: shapes, strides, types and the fixed
/// alpha/beta folded into the primitive's attributes.
struct MatMulKey: Hashable {
    var src: StridedOperand, weights: StridedOperand, dst: StridedOperand
    var bf16: Bool
    var alpha: UInt32, beta: UInt32
}

/// A made primitive and what it needs. Immutable once made, and run with a user
/// scratchpad, so any thread may execute it (oneDNN allows concurrent execution then);
/// the memory objects, whose handles change per call, belong to each thread.
final class MatMulPrimitive {
    let primitive: OpaquePointer
    let srcDesc: dnnl_memory_desc_t, weightsDesc: dnnl_memory_desc_t, dstDesc: dnnl_memory_desc_t
    let scratchpadBytes: Int
    let implementation: String

    init(_ key: MatMulKey, engine: OpaquePointer) throws(DNNLError) {
        func md(_ o: StridedOperand, _ type: dnnl_data_type_t) throws(DNNLError) -> dnnl_memory_desc_t {
            var d = dnnl_memory_desc_t()
            var dims = dnnlDims([]), strides = dnnlDims([])
            // A dimension of size 1 gets the stride a dense layout would give it, so that
            // oneDNN recognises plain layouts (its fast kernels match strides to formats).
            let inner = max(o.rows * o.rowStride, o.cols * o.colStride)
            let hs = o.heads == 1 ? inner : o.headStride
            let bs = o.batch == 1 ? o.heads * hs : o.batchStride
            let dv = [o.batch, o.heads, o.rows, o.cols], sv = [bs, hs, o.rowStride, o.colStride]
            withUnsafeMutableBytes(of: &dims) { p in for i in 0 ..< 4 { p.storeBytes(of: Int64(dv[i]), toByteOffset: i * 8, as: Int64.self) } }
            withUnsafeMutableBytes(of: &strides) { p in for i in 0 ..< 4 { p.storeBytes(of: Int64(max(sv[i], 1)), toByteOffset: i * 8, as: Int64.self) } }
            try OneDNN.check(dnnl_memory_desc_init_by_strides(&d, 4, &dims.0, type, &strides.0),
                             "dnnl_memory_desc_init_by_strides(\(dv), \(sv))")
            return d
        }
        let inType = key.bf16 ? dnnl_bf16 : dnnl_f32
        var s = try md(key.src, inType), w = try md(key.weights, inType), d = try md(key.dst, dnnl_f32)
        var desc = dnnl_matmul_desc_t()
        let shape = "src \(key.src.rows)×\(key.src.cols) wei \(key.weights.rows)×\(key.weights.cols) batch \(key.src.batch)×\(key.src.heads) \(key.bf16 ? "bf16" : "f32")"
        try OneDNN.check(dnnl_matmul_desc_init(&desc, &s, &w, nil, &d), "dnnl_matmul_desc_init(\(shape))")
        var attr: OpaquePointer?
        try OneDNN.check(dnnl_primitive_attr_create(&attr), "dnnl_primitive_attr_create")
        defer { dnnl_primitive_attr_destroy(attr) }
        try OneDNN.check(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "dnnl_primitive_attr_set_scratchpad_mode(user)")
        let alpha = Float(bitPattern: key.alpha), beta = Float(bitPattern: key.beta)
        if alpha != 1 {
            var scale = alpha
            try OneDNN.check(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &scale), "dnnl_primitive_attr_set_output_scales(\(alpha))")
        }
        if beta != 0 {
            var po: OpaquePointer?
            try OneDNN.check(dnnl_post_ops_create(&po), "dnnl_post_ops_create")
            defer { dnnl_post_ops_destroy(po) }
            try OneDNN.check(dnnl_post_ops_append_sum(po, beta), "dnnl_post_ops_append_sum(\(beta))")
            try OneDNN.check(dnnl_primitive_attr_set_post_ops(attr, po), "dnnl_primitive_attr_set_post_ops")
        }
        var pd: OpaquePointer?
        try OneDNN.check(withUnsafePointer(to: &desc) { dnnl_primitive_desc_create(&pd, UnsafeRawPointer($0), attr, engine, nil) },
                         "dnnl_primitive_desc_create(matmul, \(shape))")
        defer { dnnl_primitive_desc_destroy(pd) }
        var impl: UnsafePointer<CChar>?
        _ = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl)
        implementation = impl.map { String(cString: $0) } ?? "?"
        scratchpadBytes = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0).map { dnnl_memory_desc_get_size($0) } ?? 0
        var p: OpaquePointer?
        try OneDNN.check(dnnl_primitive_create(&p, pd), "dnnl_primitive_create(matmul, \(shape))")
        primitive = p!
        srcDesc = s; weightsDesc = w; dstDesc = d
    }

    deinit { dnnl_primitive_destroy(primitive) }

    /// Primitives of the whole process, made once per key. Worker compute threads come and
    /// go (one per step), so a per-thread cache would make every primitive again each step.
    nonisolated(unsafe) private static var made: [MatMulKey: MatMulPrimitive] = [:]
    private static let lock = NSLock()

    static func shared(_ key: MatMulKey) throws(DNNLError) -> MatMulPrimitive {
        lock.lock()
        defer { lock.unlock() }
        if let p = made[key] { return p }
        let p = try MatMulPrimitive(key, engine: OneDNN.engine())
        made[key] = p
        return p
    }
}

/// One thread's memory objects for one primitive: src, weights, dst.
struct MatMulMemories {
    let src: OpaquePointer, weights: OpaquePointer, dst: OpaquePointer

    init(_ p: MatMulPrimitive, engine: OpaquePointer) throws(DNNLError) {
        var s = p.srcDesc, w = p.weightsDesc, d = p.dstDesc
        var ms: OpaquePointer?, mw: OpaquePointer?, md: OpaquePointer?
        try OneDNN.check(dnnl_memory_create(&ms, &s, engine, nil), "dnnl_memory_create(src)")
        try OneDNN.check(dnnl_memory_create(&mw, &w, engine, nil), "dnnl_memory_create(weights)")
        try OneDNN.check(dnnl_memory_create(&md, &d, engine, nil), "dnnl_memory_create(dst)")
        src = ms!; weights = mw!; dst = md!
    }

    func destroy() { dnnl_memory_destroy(src); dnnl_memory_destroy(weights); dnnl_memory_destroy(dst) }
}

/// Per calling thread: a stream, memory objects for the primitives it ran, the scratchpad
/// and the bf16 copies of operands (all cheap to make; the primitives are shared).
final class OneDNNThreadContext {
    let stream: OpaquePointer
    var memories: [MatMulKey: (MatMulPrimitive, MatMulMemories)] = [:]
    var scratchpad = GrowableBuffer<UInt8>()
    var scratchpadMemories: [Int: OpaquePointer] = [:]
    var bf16A = GrowableBuffer<UInt16>(), bf16B = GrowableBuffer<UInt16>()
    /// bf16 copies that a caller keeps across several products (`MatMul.bf16Copy`).
    var kept: [GrowableBuffer<UInt16>] = Array(repeating: GrowableBuffer<UInt16>(), count: 4)

    init(engine: OpaquePointer) throws(DNNLError) {
        var s: OpaquePointer?
        try OneDNN.check(dnnl_stream_create(&s, engine, dnnl_stream_default_flags.rawValue), "dnnl_stream_create")
        stream = s!
    }

    deinit {
        for (_, m) in scratchpadMemories { dnnl_memory_destroy(m) }
        for (_, (_, m)) in memories { m.destroy() }
        dnnl_stream_destroy(stream)
    }

    /// Contexts of threads that ended, kept for the next thread: a worker starts a compute
    /// thread per step, and its buffers stay mapped and warm this way.
    nonisolated(unsafe) static var idle: [OneDNNThreadContext] = []
    static let idleLock = NSLock()

    nonisolated(unsafe) static var key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { raw in
            let c = Unmanaged<OneDNNThreadContext>.fromOpaque(raw!).takeRetainedValue()
            OneDNNThreadContext.idleLock.lock()
            OneDNNThreadContext.idle.append(c)
            OneDNNThreadContext.idleLock.unlock()
        }
        return k
    }()

    static func current() throws(DNNLError) -> OneDNNThreadContext {
        if let raw = pthread_getspecific(key) { return Unmanaged<OneDNNThreadContext>.fromOpaque(raw).takeUnretainedValue() }
        idleLock.lock()
        let reused = idle.popLast()
        idleLock.unlock()
        let c: OneDNNThreadContext
        if let reused { c = reused } else { c = try OneDNNThreadContext(engine: OneDNN.engine()) }
        pthread_setspecific(key, Unmanaged.passRetained(c).toOpaque())
        return c
    }

    func primitive(for key: MatMulKey) throws(DNNLError) -> (MatMulPrimitive, MatMulMemories) {
        if let e = memories[key] { return e }
        let p = try MatMulPrimitive.shared(key)
        let e = (p, try MatMulMemories(p, engine: OneDNN.engine()))
        memories[key] = e
        return e
    }

    /// A scratchpad memory object over this thread's buffer of at least `bytes`.
    func scratchpadMemory(bytes: Int) throws(DNNLError) -> OpaquePointer? {
        guard bytes > 0 else { return nil }
        let base = scratchpad.reserve(bytes)
        if let m = scratchpadMemories[bytes] {
            try OneDNN.check(dnnl_memory_set_data_handle(m, base), "dnnl_memory_set_data_handle(scratchpad)")
            return m
        }
        var d = dnnl_memory_desc_t()
        var dims = dnnlDims([bytes])
        try OneDNN.check(dnnl_memory_desc_init_by_tag(&d, 1, &dims.0, dnnl_u8, dnnl_a), "dnnl_memory_desc_init_by_tag(scratchpad \(bytes) B)")
        var m: OpaquePointer?
        try OneDNN.check(dnnl_memory_create(&m, &d, OneDNN.engine(), base), "dnnl_memory_create(scratchpad \(bytes) B)")
        scratchpadMemories[bytes] = m!
        return m
    }
}

/// A zeroed `dnnl_dims_t` (12 Int64s, a C array imported as a tuple) with `values` first.
func dnnlDims(_ values: [Int]) -> dnnl_dims_t {
    var d: dnnl_dims_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    withUnsafeMutableBytes(of: &d) { p in for (i, v) in values.enumerated() { p.storeBytes(of: Int64(v), toByteOffset: i * 8, as: Int64.self) } }
    return d
}

/// A heap buffer that only grows, 64-byte aligned; its base moves when it grows.
struct GrowableBuffer<T> {
    private(set) var base: UnsafeMutablePointer<T>?
    private(set) var capacity = 0

    mutating func reserve(_ count: Int) -> UnsafeMutablePointer<T> {
        if count > capacity {
            if let base { free(base) }
            let bytes = max(count, 1) * MemoryLayout<T>.stride
            var raw: UnsafeMutableRawPointer?
            posix_memalign(&raw, 64, (bytes + 63) / 64 * 64)
            guard let raw else { preconditionFailure("GrowableBuffer: cannot allocate \(bytes) bytes") }
            base = raw.bindMemory(to: T.self, capacity: count)
            capacity = count
        }
        return base!
    }
}

extension OneDNN {
    /// dst[b,h] = alpha·src[b,h]·weights[b,h] + beta·dst[b,h] through the matmul
    /// primitive. `src`/`weights` point at fp32 or (bf16: true) bf16 data laid out as
    /// their operand descriptions say; dst is fp32.
    static func matmul(src: UnsafeRawPointer, _ s: StridedOperand, weights: UnsafeRawPointer, _ w: StridedOperand,
                       dst: UnsafeMutablePointer<Float>, _ d: StridedOperand, bf16: Bool,
                       alpha: Float, beta: Float, context ctx: OneDNNThreadContext) throws(DNNLError) {
        let key = MatMulKey(src: s, weights: w, dst: d, bf16: bf16, alpha: alpha.bitPattern, beta: beta.bitPattern)
        let (p, m) = try ctx.primitive(for: key)
        try check(dnnl_memory_set_data_handle(m.src, UnsafeMutableRawPointer(mutating: src)), "dnnl_memory_set_data_handle(src)")
        try check(dnnl_memory_set_data_handle(m.weights, UnsafeMutableRawPointer(mutating: weights)), "dnnl_memory_set_data_handle(weights)")
        try check(dnnl_memory_set_data_handle(m.dst, dst), "dnnl_memory_set_data_handle(dst)")
        var args = [dnnl_exec_arg_t(arg: DNNL_ARG_SRC, memory: m.src),
                    dnnl_exec_arg_t(arg: DNNL_ARG_WEIGHTS, memory: m.weights),
                    dnnl_exec_arg_t(arg: DNNL_ARG_DST, memory: m.dst)]
        if let sp = try ctx.scratchpadMemory(bytes: p.scratchpadBytes) { args.append(dnnl_exec_arg_t(arg: DNNL_ARG_SCRATCHPAD, memory: sp)) }
        try check(dnnl_primitive_execute(p.primitive, ctx.stream, Int32(args.count), &args), "dnnl_primitive_execute(matmul \(p.implementation))")
        try check(dnnl_stream_wait(ctx.stream), "dnnl_stream_wait")
    }

    /// The implementation oneDNN picks for a bf16 (or fp32) product of these sizes, e.g.
    /// "brg:avx512_core_amx"; for the start-up report.
    public static func matmulImplementation(m: Int, n: Int, k: Int, bf16: Bool) throws(DNNLError) -> String {
        let key = MatMulKey(src: StridedOperand(rows: m, cols: k, rowStride: k),
                            weights: StridedOperand(rows: k, cols: n, rowStride: n),
                            dst: StridedOperand(rows: m, cols: n, rowStride: n), bf16: bf16,
                            alpha: Float(1).bitPattern, beta: Float(0).bitPattern)
        return try MatMulPrimitive(key, engine: engine()).implementation
    }
}

import Core
import Kernels
import Model

/// `svite bench gemm`: the matrix products of one lane's training step for a config,
/// each timed on every backend and precision this CPU runs, single-threaded as a lane
/// runs them, and the attention products per head against one batched call.
public struct GemmBenchmark {
    public struct Shape: Sendable {
        public var name: String
        public var transA: Bool, transB: Bool
        public var m: Int, n: Int, k: Int
        public var count: Int
        public var flops: Double { 2 * Double(m) * Double(n) * Double(k) * Double(count) }
    }

    public struct Row: Codable, Sendable {
        public var name: String
        public var shape: String
        /// GFLOP/s by variant ("openblas fp32", "onednn fp32", "onednn bf16", ...).
        public var gflops: [String: Double]
    }

    public struct Result: Codable, Sendable {
        public var config: String
        public var laneBatch: Int
        public var variants: [String]
        public var rows: [Row]
        public var implementations: [String: String]
        public var machine: MachineInfo
    }

    public let config: ViTConfig
    public let configName: String
    public let laneBatch: Int
    public let repeats: Int

    public init(config: ViTConfig, configName: String, laneBatch: Int, repeats: Int = 5) {
        self.config = config; self.configName = configName; self.laneBatch = laneBatch; self.repeats = repeats
    }

    /// The products of one block's forward and backward for `laneBatch` images.
    public var shapes: [Shape] {
        let c = config, r = laneBatch * c.blockTokens, d = c.dim, h = c.hidden
        var s: [Shape] = []
        for (name, i, o) in [("qkv", d, 3 * d), ("proj", d, d), ("fc1", d, h), ("fc2", h, d)] {
            s.append(Shape(name: "\(name) forward", transA: false, transB: true, m: r, n: o, k: i, count: 1))
            s.append(Shape(name: "\(name) dx", transA: false, transB: false, m: r, n: i, k: o, count: 1))
            s.append(Shape(name: "\(name) dW", transA: true, transB: false, m: o, n: i, k: r, count: 1))
        }
        return s
    }

    public func run(progress: (String) -> Void = { _ in }) -> Result {
        MatMul.setThreadsForCallingThread(1)
        BLAS.setThreads(1)
        var timing = LaneTiming(repeats: repeats, seed: 7)
        let bf16 = CPUFeatures.current.level.hasNativeBF16
        var variants: [(String, MatMulMode)] = [("openblas fp32", MatMulMode(.fp32, backend: .openblas)),
                                                 ("onednn fp32", MatMulMode(.fp32, backend: .onednn))]
        if bf16 { variants.append(("onednn bf16", .bf16)) }

        func buffer(_ n: Int) -> FloatBuffer { timing.buffer(n) }
        func best(_ body: () -> Void) -> Double { timing.bestSeconds(body) }
        var rows: [Row] = []
        for s in shapes {
            progress("\(s.name): \(s.m)×\(s.n)×\(s.k)")
            let a = buffer(s.m * s.k), b = buffer(s.k * s.n), c = buffer(s.m * s.n)
            var g: [String: Double] = [:]
            for (label, mode) in variants {
                let t = best {
                    MatMul.gemm(transA: s.transA, transB: s.transB, m: s.m, n: s.n, k: s.k, alpha: 1,
                                a: a.pointer, lda: s.transA ? s.m : s.k, b: b.pointer, ldb: s.transB ? s.k : s.n,
                                beta: 1, c: c.pointer, ldc: s.n, mode: mode)
                }
                g[label] = s.flops / t / 1e9
            }
            rows.append(Row(name: s.name, shape: "\(s.transA ? "T" : "N")\(s.transB ? "T" : "N") \(s.m)×\(s.n)×\(s.k)", gflops: g))
        }
        // Attention of one block: scores = q·kᵀ per (image, head), straight from qkv.
        let n = config.blockTokens, heads = config.heads, hd = config.headDim, d = config.dim
        let qkv = buffer(laneBatch * n * 3 * d), probs = buffer(laneBatch * heads * n * n)
        let q = StridedOperand(batch: laneBatch, heads: heads, rows: n, cols: hd, batchStride: n * 3 * d, headStride: hd, rowStride: 3 * d)
        let kT = StridedOperand(batch: laneBatch, heads: heads, rows: hd, cols: n, batchStride: n * 3 * d, headStride: hd, rowStride: 1, colStride: 3 * d)
        let p = StridedOperand(batch: laneBatch, heads: heads, rows: n, cols: n, batchStride: heads * n * n, headStride: n * n, rowStride: n)
        let flops = 2 * Double(laneBatch * heads) * Double(n * n * hd)
        progress("attention scores: \(laneBatch)×\(heads) of \(n)×\(n)×\(hd)")
        var g: [String: Double] = [:]
        for (label, mode) in variants {
            if mode.precision == .fp32 {
                let perHead = best {
                    for bi in 0 ..< laneBatch {
                        for h in 0 ..< heads {
                            let base = qkv.pointer + bi * n * 3 * d + h * hd
                            MatMul.gemm(transA: false, transB: true, m: n, n: n, k: hd, alpha: 1, a: base, lda: 3 * d,
                                        b: base + d, ldb: 3 * d, beta: 0, c: probs.pointer + (bi * heads + h) * n * n, ldc: n, mode: mode)
                        }
                    }
                }
                g[label + " per head"] = flops / perHead / 1e9
            }
            let batched = best {
                MatMul.batched(a: .fp32(qkv.pointer), q, b: .fp32(qkv.pointer + d), kT, c: probs.pointer, p,
                               alpha: 1, beta: 0, mode: mode)
            }
            g[label + " batched"] = flops / batched / 1e9
        }
        rows.append(Row(name: "attention q·kᵀ", shape: "\(laneBatch * heads) × \(n)×\(n)×\(hd)", gflops: g))
        var impl: [String: String] = [:]
        let r = laneBatch * config.blockTokens
        impl["fp32 matmul"] = (try? OneDNN.matmulImplementation(m: r, n: 3 * d, k: d, bf16: false)) ?? "unavailable"
        if bf16 { impl["bf16 matmul"] = (try? OneDNN.matmulImplementation(m: r, n: 3 * d, k: d, bf16: true)) ?? "unavailable" }
        let names = rows.flatMap { $0.gflops.keys }
        var seen = Set<String>()
        return Result(config: configName, laneBatch: laneBatch, variants: names.filter { seen.insert($0).inserted },
                      rows: rows, implementations: impl, machine: MachineInfo.current())
    }
}

extension GemmBenchmark.Result {
    public var table: String {
        var lines = ["svite bench gemm: \(config), one lane of \(laneBatch) images, 1 thread, GFLOP/s (best of the runs)",
                     "machine: \(machine.summary)",
                     "oneDNN matmul implementations: " + implementations.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "), ""]
        for r in rows {
            let cells = r.gflops.sorted { $0.key < $1.key }.map { "\($0.key) " + String(format: "%.1f", $0.value) }
            lines.append("\(r.name.padding(toLength: 16, withPad: " ", startingAt: 0)) \(r.shape.padding(toLength: 22, withPad: " ", startingAt: 0)) " + cells.joined(separator: " | "))
        }
        return lines.joined(separator: "\n")
    }
}

import Core
import Kernels
import Model

/// `svite bench sparse`: one lane's prunable linear layers (qkv, proj, fc1, fc2), forward
/// and backward, dense (the engine's products on the masked weight) against the sparse
/// kernels on the active entries only, single-threaded as a lane runs them, at each
/// density asked. The sparse time includes the transposes it needs.
public struct SparseLinearBenchmark {
    public struct Row: Codable, Sendable {
        public var layer: String
        public var shape: String
        public var density: Double
        /// Milliseconds, best of the runs: dense forward + dx + dW; sparse parts and total.
        public var denseMs: Double
        public var sparseForwardMs: Double
        public var sparseInputGradMs: Double
        public var sparseWeightGradMs: Double
        public var transposeMs: Double
        public var sparseMs: Double
        public var speedup: Double
        /// The row-major form (`forwardRows` + `backwardRows`: block transposes in cache,
        /// dx and dW in one pass, the bias and its gradient included), and its speed-up.
        public var rowsMs: Double
        public var rowsSpeedup: Double
    }

    public struct Result: Codable, Sendable {
        public var config: String
        public var laneBatch: Int
        public var rows: [Row]
        public var machine: MachineInfo
    }

    public let config: ViTConfig
    public let configName: String
    public let laneBatch: Int
    public let densities: [Double]
    public let repeats: Int

    public init(config: ViTConfig, configName: String, laneBatch: Int, densities: [Double], repeats: Int = 5) {
        self.config = config; self.configName = configName; self.laneBatch = laneBatch; self.densities = densities; self.repeats = repeats
    }

    public func run(progress: (String) -> Void = { _ in }) -> Result {
        MatMul.setThreadsForCallingThread(1)
        BLAS.setThreads(1)
        var timing = LaneTiming(repeats: repeats, seed: 11)
        func buffer(_ n: Int) -> FloatBuffer { timing.buffer(n) }
        func best(_ body: () -> Void) -> Double { 1000 * timing.bestSeconds(body) }
        let c = config, r = laneBatch * c.blockTokens, d = c.dim, h = c.hidden
        var rows: [Row] = []
        for (name, i, o) in [("qkv", d, 3 * d), ("proj", d, d), ("fc1", d, h), ("fc2", h, d)] {
            let x = buffer(r * i), dy = buffer(r * o), w = buffer(o * i), b = buffer(o)
            let y = buffer(r * o), dx = buffer(r * i), dw = buffer(o * i), db = buffer(o)
            let xT = buffer(i * r), yT = buffer(o * r), dyT = buffer(o * r), dxT = buffer(i * r)
            let mask = FloatBuffer(count: o * i)
            let denseMs = best {
                Linear.forward(y: y.pointer, x: x.pointer, weight: w.pointer, bias: b.pointer, rows: r, inFeatures: i, outFeatures: o)
                Linear.backward(dx: dx.pointer, dweight: dw.pointer, dbias: db.pointer, dy: dy.pointer, x: x.pointer, weight: w.pointer,
                                rows: r, inFeatures: i, outFeatures: o)
            }
            for density in densities {
                progress("\(name) \(r)×\(i)→\(o) at density \(density)")
                for e in 0 ..< o * i { mask.pointer[e] = timing.rng.nextUniform() < Float(density) ? 1 : 0 }
                var sparse = SparseWeight(mask: mask.pointer, outFeatures: o, inFeatures: i)
                sparse.gather(from: w.pointer)
                let dvalues = FloatBuffer(count: max(1, sparse.activeCount))
                let transposeMs = best {
                    SparseLinear.transpose(xT.pointer, x.pointer, rows: r, cols: i)
                    SparseLinear.transpose(y.pointer, yT.pointer, rows: o, cols: r)
                    SparseLinear.transpose(dyT.pointer, dy.pointer, rows: r, cols: o)
                    SparseLinear.transpose(dx.pointer, dxT.pointer, rows: i, cols: r)
                }
                let forwardMs = best { SparseLinear.forward(yT: yT.pointer, xT: xT.pointer, weight: sparse, rows: r) }
                let inputMs = best { SparseLinear.backwardInput(dxT: dxT.pointer, dyT: dyT.pointer, weight: sparse, rows: r) }
                let weightMs = best {
                    SparseLinear.backwardWeight(dvalues: dvalues.pointer, dyT: dyT.pointer, xT: xT.pointer, weight: sparse, rows: r)
                }
                let total = transposeMs + forwardMs + inputMs + weightMs
                let rowsMs = best {
                    SparseLinear.forwardRows(y: y.pointer, x: x.pointer, bias: b.pointer, weight: sparse, rows: r)
                    SparseLinear.backwardRows(dx: dx.pointer, dvalues: dvalues.pointer, dbias: db.pointer, dy: dy.pointer, x: x.pointer,
                                              weight: sparse, rows: r)
                }
                rows.append(Row(layer: name, shape: "\(r)×\(i)→\(o)", density: density, denseMs: denseMs, sparseForwardMs: forwardMs,
                                sparseInputGradMs: inputMs, sparseWeightGradMs: weightMs, transposeMs: transposeMs,
                                sparseMs: total, speedup: denseMs / total, rowsMs: rowsMs, rowsSpeedup: denseMs / rowsMs))
            }
        }
        return Result(config: configName, laneBatch: laneBatch, rows: rows, machine: .current())
    }
}

extension SparseLinearBenchmark.Result {
    public var table: String {
        var lines = ["svite bench sparse: \(config), one lane of \(laneBatch) images, 1 thread, fp32, ms (best of the runs)",
                     "machine: \(machine.summary)", "",
                     "layer shape              density   dense | transposed form: sparse (fwd + dx + dW + transposes) speed-up | row-major form: sparse speed-up"]
        for r in rows {
            lines.append(String(format: "%@ %@ %6.3f %8.2f | %8.2f (%.2f + %.2f + %.2f + %.2f) %6.2fx | %8.2f %6.2fx",
                                r.layer.padding(toLength: 5, withPad: " ", startingAt: 0), r.shape.padding(toLength: 18, withPad: " ", startingAt: 0),
                                r.density, r.denseMs, r.sparseMs, r.sparseForwardMs, r.sparseInputGradMs, r.sparseWeightGradMs,
                                r.transposeMs, r.speedup, r.rowsMs, r.rowsSpeedup))
        }
        return lines.joined(separator: "\n")
    }
}

import Config
import Core
import Foundation
import Kernels
import Model
import Optim
import Sparsity

/// `svite bench model`: times the dense ViT's forward and forward+backward on random
/// data after warm-up, medians of several runs, and in the same run one large product on
/// the same threads, backend and precision as the roofline.
public struct ModelBenchmark {
    public struct Options: Sendable {
        public var config: ViTConfig
        public var configName: String
        public var batch: Int
        public var threads: Int
        public var warmup = 2
        public var repeats = 5
        /// Side of the square sgemm used as the roofline.
        public var sgemmSize = 2048
        /// S2ViTE rows: structured sparsities to time against dense (kept heads and
        /// neurons per block: ⌈(1 − s)·count⌉, or `headDensity` for heads).
        public var structuredSparsities: [Double] = []
        public var headDensity: Double? = nil
        /// SViTE+ rows: token keep ratios to time (the selector's scorer included).
        public var tokenKeeps: [Double] = []
        /// SViTE rows: unstructured sparsities (ERK) to time against the dense products,
        /// the masked layers' kernels chosen as `sparseKernels` says.
        public var unstructuredSparsities: [Double] = []
        public var sparseKernels: SparseKernelMode = .auto
        /// A trained model to time instead of random weights: its parameters and, for an
        /// unstructured run, its masks (a row of its own beside the ERK ones).
        public var weights: (params: FloatBuffer, masks: MaskSet?, name: String)?
        /// The precision of the matrix products, and the engine's one-line report.
        public var precision: Precision = .fp32
        public var engine = ""

        public init(config: ViTConfig, configName: String, batch: Int, threads: Int) {
            self.config = config; self.configName = configName; self.batch = batch; self.threads = threads
        }
    }

    public struct Timing: Codable, Sendable {
        public var medianMs: Double
        public var samplesMs: [Double]
        public var imagesPerSecond: Double
        public var gflops: Double
    }

    public struct Result: Codable, Sendable {
        public var config: String
        public var model: ViTConfig
        public var batch: Int
        public var threads: Int
        public var lanes: Int
        public var parameters: Int
        public var forwardGFLOPPerImage: Double
        public var forward: Timing
        public var forwardBackward: Timing
        /// forward + loss + backward + AdamW step: what PyTorch's reference step times.
        public var trainStep: Timing
        public var sgemmSize: Int
        public var sgemmGflops: Double
        public var workspaceMiB: Double
        public var precision: Precision
        public var engine: String
        public var structured: [StructuredRow] = []
        public var tokens: [TokenRow] = []
        public var unstructured: [UnstructuredRow] = []
        public var machine: MachineInfo
    }

    /// The model with a token selector keeping `keep` of the patches, against the plain
    /// model timed above: inference (forward, deterministic top-k) and a training step
    /// (forward+backward with Gumbel noise).
    public struct TokenRow: Codable, Sendable {
        public var keep: Double
        public var tokens: Int
        public var flopsSaving: Double
        public var forward: Timing
        public var forwardBackward: Timing
        /// The plain model's forward and forward+backward, timed alternately with these.
        public var plainForward: Timing
        public var plainForwardBackward: Timing
        public var forwardSaving: Double
        public var stepSaving: Double
    }

    /// A compact (S2ViTE) step against the dense one timed in the same run: gather the
    /// kept parameters, forward+backward on the compact model, scatter the gradient.
    public struct StructuredRow: Codable, Sendable {
        public var sparsity: Double
        public var headsPerBlock: Int
        public var neuronsPerBlock: Int
        public var parameters: Int
        public var parameterSparsity: Double
        public var flopsSaving: Double
        public var forwardBackward: Timing
        /// The dense forward+backward timed alternately with it.
        public var dense: Timing
        /// 1 − the median over pairs of compact step time / dense step time.
        public var timeSaving: Double
    }

    public let options: Options
    public init(_ options: Options) { self.options = options }

    /// progress: called with a short line before each phase.
    public func run(progress: (String) -> Void = { _ in }) -> Result {
        let o = options
        let model = ViTModel(config: o.config)
        let params = FloatBuffer(count: model.layout.count)
        if let w = o.weights {
            precondition(w.params.count == params.count, "ModelBenchmark: the weights are of another model")
            params.pointer.update(from: w.params.pointer, count: params.count)
        } else {
            Initializer.initialize(params, layout: model.layout, seed: 0)
        }
        let grads = FloatBuffer(count: model.layout.count)
        var rng = Xoshiro256(seed: 1)
        let images = FloatBuffer(count: o.batch * o.config.imageValues)
        for i in 0 ..< images.count { images.pointer[i] = rng.nextNormal() }
        let labels = (0 ..< o.batch).map { _ in Int32(rng.next() % UInt64(o.config.numClasses)) }
        let ws = ViTWorkspace(model: model, batch: o.batch, threads: o.threads, precision: o.precision)
        let flopsFwd = model.forwardFLOPsPerImage * Double(o.batch)

        func time(_ label: String, flops: Double, _ body: () -> Void) -> Timing {
            progress("\(label): \(o.warmup) warm-up + \(o.repeats) timed runs")
            for _ in 0 ..< o.warmup { body() }
            let samples = (0 ..< o.repeats).map { _ in Stopwatch.seconds(body) }
            let med = Stopwatch.median(samples)
            return Timing(medianMs: med * 1e3, samplesMs: samples.map { $0 * 1e3 },
                          imagesPerSecond: Double(o.batch) / med, gflops: flops / med / 1e9)
        }

        /// A variant against a reference, alternating sample by sample (which runs first
        /// alternates too), so a slow spell of this shared machine hits both alike; the
        /// saving is 1 − the median of the per-pair time ratios.
        func timePair(_ label: String, reference: () -> Void, refFLOPs: Double, _ body: () -> Void, flops: Double)
            -> (reference: Timing, variant: Timing, saving: Double) {
            progress("\(label): \(o.warmup) warm-up + \(o.repeats) timed pairs against the reference")
            for _ in 0 ..< o.warmup { reference(); body() }
            var r: [Double] = [], v: [Double] = []
            for i in 0 ..< o.repeats {
                if i % 2 == 0 { r.append(Stopwatch.seconds(reference)); v.append(Stopwatch.seconds(body)) } else { v.append(Stopwatch.seconds(body)); r.append(Stopwatch.seconds(reference)) }
            }
            func timing(_ s: [Double], _ f: Double) -> Timing {
                let med = Stopwatch.median(s)
                return Timing(medianMs: med * 1e3, samplesMs: s.map { $0 * 1e3 }, imagesPerSecond: Double(o.batch) / med, gflops: f / med / 1e9)
            }
            return (timing(r, refFLOPs), timing(v, flops), 1 - Stopwatch.median(zip(v, r).map { $0 / $1 }))
        }

        let fwd = labels.withUnsafeBufferPointer { lab in
            time("forward", flops: flopsFwd) {
                model.forward(params: params.pointer, images: images.pointer, labels: lab.baseAddress!,
                              smoothing: 0.1, workspace: ws)
            }
        }
        let train = labels.withUnsafeBufferPointer { lab in
            time("forward+backward", flops: 3 * flopsFwd) {
                model.forwardBackward(params: params.pointer, grads: grads.pointer, images: images.pointer,
                                      labels: lab.baseAddress!, smoothing: 0.1, workspace: ws)
            }
        }
        let optimizer = Optimizer(config: OptimizerConfig(), layout: model.layout)
        let step = labels.withUnsafeBufferPointer { lab in
            time("train step (forward+backward+AdamW)", flops: 3 * flopsFwd) {
                model.forwardBackward(params: params.pointer, grads: grads.pointer, images: images.pointer,
                                      labels: lab.baseAddress!, smoothing: 0.1, workspace: ws)
                optimizer.step(params: params.pointer, grads: grads.pointer, lr: 1e-4)
            }
        }
        var rows: [StructuredRow] = []
        for sparsity in o.structuredSparsities {
            let selection = UnitSelection.random(config: o.config, headDensity: o.headDensity ?? 1 - sparsity,
                                                 mlpDensity: 1 - sparsity, seed: 3)
            let plan = selection.plan(full: model)
            let compactParams = FloatBuffer(count: plan.compact.layout.count), compactGrads = FloatBuffer(count: plan.compact.layout.count)
            let cws = ViTWorkspace(model: plan.compact, batch: o.batch, threads: o.threads, precision: o.precision)
            let t = labels.withUnsafeBufferPointer { lab in
                timePair("structured \(Int((sparsity * 100).rounded()))% forward+backward", reference: {
                    model.forwardBackward(params: params.pointer, grads: grads.pointer, images: images.pointer,
                                          labels: lab.baseAddress!, smoothing: 0.1, workspace: ws)
                }, refFLOPs: 3 * flopsFwd, {
                    plan.gather(params.pointer, into: compactParams.pointer)
                    plan.compact.forwardBackward(params: compactParams.pointer, grads: compactGrads.pointer, images: images.pointer,
                                                 labels: lab.baseAddress!, smoothing: 0.1, workspace: cws)
                    plan.scatter(compactGrads.pointer, into: grads.pointer)
                }, flops: 3 * plan.compact.forwardFLOPsPerImage * Double(o.batch))
            }
            let kept = plan.compact.layout.parameterCount
            rows.append(StructuredRow(sparsity: sparsity, headsPerBlock: selection.keptHeads[0].count, neuronsPerBlock: selection.keptNeurons[0].count,
                                      parameters: kept, parameterSparsity: 1 - Double(kept) / Double(model.layout.parameterCount),
                                      flopsSaving: 1 - plan.compact.forwardFLOPsPerImage / model.forwardFLOPsPerImage,
                                      forwardBackward: t.variant, dense: t.reference, timeSaving: t.saving))
        }
        var tokenRows: [TokenRow] = []
        for keep in o.tokenKeeps {
            var c = o.config
            c.tokenKeep = keep
            let m = ViTModel(config: c)
            let p = FloatBuffer(count: m.layout.count), g = FloatBuffer(count: m.layout.count)
            Initializer.initialize(p, layout: m.layout, seed: 0)
            let tws = ViTWorkspace(model: m, batch: o.batch, threads: o.threads, precision: o.precision)
            let noise = FloatBuffer(count: o.batch * c.numPatches)
            for i in 0 ..< noise.count { noise.pointer[i] = rng.nextGumbel() }
            let selection = TokenSelection(noise: UnsafePointer(noise.pointer), temperature: 1)
            let label = "keep \(keep) tokens"
            let (f, t) = labels.withUnsafeBufferPointer { lab in
                (timePair("\(label) forward", reference: {
                    model.forward(params: params.pointer, images: images.pointer, labels: lab.baseAddress!, smoothing: 0.1, workspace: ws)
                 }, refFLOPs: flopsFwd, {
                    m.forward(params: p.pointer, images: images.pointer, labels: lab.baseAddress!, smoothing: 0.1, workspace: tws)
                 }, flops: m.forwardFLOPsPerImage * Double(o.batch)),
                 timePair("\(label) forward+backward", reference: {
                    model.forwardBackward(params: params.pointer, grads: grads.pointer, images: images.pointer,
                                          labels: lab.baseAddress!, smoothing: 0.1, workspace: ws)
                 }, refFLOPs: 3 * flopsFwd, {
                    m.forwardBackward(params: p.pointer, grads: g.pointer, images: images.pointer, labels: lab.baseAddress!,
                                      smoothing: 0.1, workspace: tws, selection: selection)
                 }, flops: 3 * m.forwardFLOPsPerImage * Double(o.batch)))
            }
            tokenRows.append(TokenRow(keep: keep, tokens: c.blockTokens, flopsSaving: 1 - m.forwardFLOPsPerImage / model.forwardFLOPsPerImage,
                                      forward: f.variant, forwardBackward: t.variant, plainForward: f.reference,
                                      plainForwardBackward: t.reference, forwardSaving: f.saving, stepSaving: t.saving))
        }
        let unstructured = unstructuredRows(model: model, params: params, images: images, labels: labels, workspace: ws) {
            timePair($0, reference: $1, refFLOPs: $2, $3, flops: $4)
        }
        progress("gemm \(o.sgemmSize)³ on \(o.threads) threads, \(MatMul.backend.rawValue) \(o.precision.rawValue)")
        let sgemm = Self.sgemmGflops(size: o.sgemmSize, threads: o.threads, precision: o.precision)
        return Result(config: o.configName, model: o.config, batch: o.batch, threads: o.threads, lanes: ws.laneCount,
                      parameters: model.layout.parameterCount, forwardGFLOPPerImage: model.forwardFLOPsPerImage / 1e9,
                      forward: fwd, forwardBackward: train, trainStep: step, sgemmSize: o.sgemmSize, sgemmGflops: sgemm,
                      workspaceMiB: Double(ws.bytes) / 1_048_576, precision: o.precision, engine: o.engine, structured: rows, tokens: tokenRows, unstructured: unstructured,
                      machine: MachineInfo.current())
    }

    /// Best of 3 for an n×n×n product on `threads` threads, on the process's backend and
    /// in the run's precision: the roofline the model's products are held to.
    public static func sgemmGflops(size n: Int, threads: Int, precision: Precision = .fp32) -> Double {
        let a = FloatBuffer(count: n * n), b = FloatBuffer(count: n * n), c = FloatBuffer(count: n * n)
        var rng = Xoshiro256(seed: 2)
        for i in 0 ..< n * n { a.pointer[i] = rng.nextUniform(); b.pointer[i] = rng.nextUniform() }
        MatMul.setThreadsForCallingThread(threads)
        defer { MatMul.setThreadsForCallingThread(1) }
        let run = {
            MatMul.gemm(transA: false, transB: true, m: n, n: n, k: n, alpha: 1, a: a.pointer, lda: n,
                        b: b.pointer, ldb: n, beta: 0, c: c.pointer, ldc: n, mode: MatMulMode(precision))
        }
        let best = Stopwatch.best(of: 3, run)
        return 2 * Double(n) * Double(n) * Double(n) / best / 1e9
    }
}

extension ModelBenchmark.Result {
    public var table: String {
        func row(_ name: String, _ t: ModelBenchmark.Timing) -> String {
            name.padding(toLength: 20, withPad: " ", startingAt: 0)
                + String(format: "%12.1f %12.1f %10.1f", t.medianMs, t.imagesPerSecond, t.gflops)
        }
        return """
        svite bench model: \(config), batch \(batch), \(threads) thread\(threads == 1 ? "" : "s") (\(lanes) lane\(lanes == 1 ? "" : "s")), \(precision.rawValue)
        model: \(model) — \(parameters) parameters, \(String(format: "%.3f", forwardGFLOPPerImage)) GFLOP/image forward, workspace \(String(format: "%.0f", workspaceMiB)) MiB
        machine: \(machine.summary)
        \(engine)

        pass                   median ms        img/s    GFLOP/s
        \(row("forward", forward))
        \(row("forward+backward", forwardBackward))
        \(row("train step", trainStep))
        \("gemm \(sgemmSize)³".padding(toLength: 20, withPad: " ", startingAt: 0))\(String(repeating: " ", count: 25))\(String(format: "%11.1f", sgemmGflops))  (roofline: one product, \(threads) thread\(threads == 1 ? "" : "s"), \(precision.rawValue))
        """ + structuredTable + tokenTable + unstructuredTable
    }

    var tokenTable: String {
        guard !tokens.isEmpty else { return "" }
        var lines = ["", "SViTE+ token selector (scorer included), each timed alternately with the plain model (\(model.tokens) tokens):",
                     "keep   tokens  FLOPs saving  forward ms (plain)  saving   fwd+bwd ms (plain)  saving"]
        for r in tokens {
            lines.append(String(format: "%4.2f  %7d  %11.1f%%  %6.1f (%6.1f)  %6.1f%%  %7.1f (%7.1f)  %6.1f%%", r.keep, r.tokens, r.flopsSaving * 100,
                                r.forward.medianMs, r.plainForward.medianMs, r.forwardSaving * 100,
                                r.forwardBackward.medianMs, r.plainForwardBackward.medianMs, r.stepSaving * 100))
        }
        return "\n" + lines.joined(separator: "\n")
    }

    var structuredTable: String {
        guard !structured.isEmpty else { return "" }
        let hidden = model.hidden
        var lines = ["", "S2ViTE compact steps (gather + forward+backward + scatter), each timed alternately with the dense forward+backward:",
                     "structured  heads/block  neurons/block  params (sparsity)    FLOPs saving  median ms  dense ms    img/s  time saving"]
        for r in structured {
            lines.append(String(format: "%9.0f%%  %6d of %d  %7d of %d  %8d (%4.1f%%)  %11.1f%%  %9.1f  %8.1f  %7.1f  %10.1f%%",
                                r.sparsity * 100, r.headsPerBlock, model.heads, r.neuronsPerBlock, hidden, r.parameters,
                                r.parameterSparsity * 100, r.flopsSaving * 100, r.forwardBackward.medianMs, r.dense.medianMs,
                                r.forwardBackward.imagesPerSecond, r.timeSaving * 100))
        }
        return "\n" + lines.joined(separator: "\n")
    }
}

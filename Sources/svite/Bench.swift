import Compression
import ArgumentParser
import Benchmarks
import Compute
import Config
import Foundation
import Model
import Kernels
import Training
import Wire

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed: prints a table (or JSON) of what was timed and on what machine.",
        subcommands: [BenchModel.self, BenchGemm.self, BenchSparse.self, BenchComm.self, BenchCluster.self]
    )
}

/// A benchmark's figures: one JSON object (snake_case keys, sorted) or its table.
func printResult<T: Encodable>(_ value: T, json: Bool, table: () -> String) throws {
    if json {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        enc.keyEncodingStrategy = .convertToSnakeCase
        print(String(decoding: try enc.encode(value), as: UTF8.self))
    } else {
        print(table())
    }
}

/// What the one-lane benchmarks (`bench gemm`, `bench sparse`) share: the config, the
/// lane's images, the timed runs and the output form.
struct LaneBenchOptions: ParsableArguments {
    @Option(name: .long, help: "Config file or built-in name.")
    var config: String = "fmnist-tiny"

    @Option(name: .long, help: "Images in one lane (a batch of B on T threads runs lanes of B/T).")
    var laneBatch: Int = 64

    @Option(name: .long, help: "Timed runs per measurement (the best is reported).")
    var repeats: Int = 5

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    func validate() throws {
        guard laneBatch >= 1 && laneBatch <= 4096 else { throw ValidationError("--lane-batch must be 1 to 4096 (got \(laneBatch))") }
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1 (got \(repeats))") }
    }
}

struct BenchModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Time the dense ViT's forward and forward+backward passes on random data.",
        discussion: """
        After warm-up, each pass runs --repeats times and the median is reported as \
        milliseconds per batch, images per second and analytic GFLOP/s (2 × multiply-adds \
        of the linear layers, attention products, patch embedding and head; backward \
        counted as twice the forward), and a train step (forward, backward and AdamW, what \
        PyTorch's reference times). In the same run one square product on the same threads, \
        backend and precision gives the machine's practical roofline. The first lines say \
        which backend, instruction set and precision ran (--backend, --precision).

        --checkpoint PATH times a trained model (its config, weights and, for an unstructured \
        run, its own masks as one more row). --sparsity S times SViTE's unstructured masks at sparsity S: a train step and \
        inference with the masked layers on the sparse kernels (as --sparse-kernels, default \
        auto, chooses them per layer) against the same masked model on dense products, and \
        per layer kind what the choice measured.

        --reference also runs benchmarks/reference.py (timm's VisionTransformer in PyTorch, \
        fp32 and bf16 autocast) in this command and prints the ratios.

        Examples:
          svite bench model --config deit-tiny --batch 64 --threads 2 --precision bf16
          svite bench model --config fmnist-tiny --batch 128 --threads 2 --reference
          svite bench model --config deit-tiny --batch 64 --sparsity 0.9
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var threading: ThreadOptions
    @OptionGroup var compute: ComputeOptions

    @Option(name: .long, help: "Config file or built-in name (deit-tiny, deit-small, deit-base, fmnist-tiny, fmnist-6head).")
    var config: String = "fmnist-tiny"

    @Option(name: .long, help: "Images per batch.")
    var batch: Int = 128

    @Option(name: .long, help: "Timed runs per pass (the median is reported; at least 5).")
    var repeats: Int = 5

    @Option(name: .long, help: "Untimed warm-up runs per pass.")
    var warmup: Int = 2

    @Option(name: .long, help: "Side of the square product timed as the roofline.")
    var sgemmSize: Int = 2048

    @Option(name: .long, parsing: .singleValue,
            help: "Also time an S2ViTE compact step at this structured sparsity (repeatable; e.g. 0.4 keeps ⌈0.6·count⌉ heads and neurons per block).")
    var structured: [Double] = []

    @Option(name: .long, help: "Fraction of heads kept per block in the structured rows (default: 1 − the structured sparsity).")
    var headDensity: Double?

    @Option(name: .long, parsing: .singleValue,
            help: "Also time the model with an SViTE+ token selector keeping this fraction of the patches (repeatable; e.g. 1 0.95 0.9 0.7).")
    var tokenKeep: [Double] = []

    @Option(name: .long, parsing: .singleValue,
            help: "Also time the model with SViTE's unstructured masks at this sparsity (repeatable; e.g. 0.5 0.7 0.8 0.9 0.95; ERK over the block layers), its masked layers on the kernels --sparse-kernels chooses, against the same masked model on dense products.")
    var sparsity: [Double] = []

    @Option(name: .long, help: ArgumentHelp("Time a trained model: its weights instead of random ones, and an SViTE run's own masks as a row beside any --sparsity (checkpoint, run directory or safetensors file; its config replaces --config).", valueName: "path"))
    var checkpoint: String?

    @Option(name: .long, help: ArgumentHelp("With --sparsity: also draw the speed-up against sparsity into this .png or .svg.", valueName: "file"))
    var plot: String?

    @Flag(name: .long, help: "Also run the PyTorch/timm reference (benchmarks/reference.py) in this command and print both with their ratio; svite runs in fp32 and, where the CPU has native bf16, in bf16. Needs torch and timm (SVITE_REFERENCE_PYTHON, default /opt/ref/bin/python3).")
    var reference = false

    @Flag(name: .long, help: "Print the figures as one JSON object instead of a table.")
    var json = false

    func validate() throws {
        if reference && (!structured.isEmpty || !tokenKeep.isEmpty || !sparsity.isEmpty || checkpoint != nil) {
            throw ValidationError("--reference compares the plain model; drop --structured, --token-keep, --sparsity and --checkpoint")
        }
        if let bad = sparsity.first(where: { !($0 > 0 && $0 < 1) }) { throw ValidationError("--sparsity must be in (0, 1) (got \(bad))") }
        if let plot {
            guard !sparsity.isEmpty || checkpoint != nil else { throw ValidationError("--plot draws the --sparsity rows: give at least one --sparsity") }
            guard BenchPlots.format(plot) != nil else { throw ValidationError("--plot must name a .png or .svg file (got \(plot))") }
        }
        if let bad = structured.first(where: { !($0 >= 0 && $0 < 1) }) { throw ValidationError("--structured must be in [0, 1) (got \(bad))") }
        if let h = headDensity, !(h > 0 && h <= 1) { throw ValidationError("--head-density must be in (0, 1] (got \(h))") }
        if let bad = tokenKeep.first(where: { !($0 > 0 && $0 <= 1) }) { throw ValidationError("--token-keep must be in (0, 1] (got \(bad))") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1 (got \(batch))") }
        guard repeats >= 5 else { throw ValidationError("--repeats must be at least 5 so the median means something (got \(repeats))") }
        guard warmup >= 0 else { throw ValidationError("--warmup must be >= 0 (got \(warmup))") }
        guard sgemmSize >= 64 && sgemmSize <= 8192 else { throw ValidationError("--sgemm-size must be between 64 and 8192 (got \(sgemmSize))") }
    }

    func run() throws {
        let log = global.bootstrap("svite.bench")
        let weights = try checkpoint.map { try LoadedWeights.load($0, overrides: compute.overrides) }
        let file = try weights?.config ?? RunConfig.resolve(config, overrides: compute.overrides)
        if let w = weights { log.info("timing \(w.path)\(w.masks.map { String(format: " with its masks (density %.3f)", $0.density) } ?? "")") }
        func measure(_ precision: Precision) -> ModelBenchmark.Result {
            let engine = Engine.configure(backend: file.compute.backend, precision: precision)
            Engine.log(engine, to: log)
            var options = ModelBenchmark.Options(config: file.model, configName: file.name, batch: batch, threads: threading.threads)
            options.precision = engine.precision
            options.engine = engine.summary
            options.repeats = repeats
            options.warmup = warmup
            options.sgemmSize = sgemmSize
            options.structuredSparsities = structured
            options.headDensity = headDensity
            options.tokenKeeps = tokenKeep
            options.unstructuredSparsities = sparsity
            options.sparseKernels = file.compute.sparseKernels
            options.weights = weights.map { ($0.params, $0.masks, $0.path) }
            return ModelBenchmark(options).run { log.info("\($0)") }
        }
        if reference {
            let precisions: [Precision] = compute.precision.map { [$0] }
                ?? (CPUFeatures.current.level.hasNativeBF16 ? [.fp32, .bf16] : [.fp32])
            let mine = precisions.map(measure)
            log.info("PyTorch reference: \(PyTorchReference.python()) \(PyTorchReference.script() ?? "benchmarks/reference.py")")
            var ref = PyTorchReference(config: file.model, batch: batch, threads: threading.threads)
            ref.warmup = warmup
            ref.repeats = repeats
            let comparison = ReferenceComparison(svite: mine, reference: try ref.run())
            try printResult(comparison, json: json) { mine.map(\.table).joined(separator: "\n\n") + "\n" + comparison.table }
            return
        }
        let result = measure(file.training.precision)
        try printResult(result, json: json) { result.table }
        if let plot { try BenchPlots.model(result, to: plot) }
    }
}

struct BenchGemm: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gemm",
        abstract: "Time one lane's matrix products on every backend and precision this CPU runs.",
        discussion: """
        The products of one block's forward and backward (qkv, proj, fc1, fc2: forward, dx, \
        dW) for the images of one lane, single-threaded as a lane runs them, on OpenBLAS fp32, \
        oneDNN fp32 and (where the CPU has native bf16 products) oneDNN bf16; and the \
        attention scores per head against one batched call. Prints GFLOP/s and which oneDNN \
        implementation runs.

        Example: svite bench gemm --config deit-tiny --lane-batch 32
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var lane: LaneBenchOptions

    func run() throws {
        let log = global.bootstrap("svite.bench")
        let file = try RunConfig.resolve(lane.config)
        let result = GemmBenchmark(config: file.model, configName: file.name, laneBatch: lane.laneBatch, repeats: lane.repeats).run { log.info("\($0)") }
        try printResult(result, json: lane.json) { result.table }
    }
}

struct BenchSparse: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sparse",
        abstract: "Time one lane's prunable linear layers dense against the sparse kernels, by density.",
        discussion: """
        qkv, proj, fc1 and fc2 of one block for the images of one lane, single-threaded as a \
        lane runs them: forward, dx and dW on the dense weight (the engine's products) against \
        the sparse kernels on the active entries only, with the transposes they need. Masks \
        are drawn uniformly at each --density (the fraction of weights active).

        Example: svite bench sparse --config deit-tiny --lane-batch 32 --density 0.1
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var lane: LaneBenchOptions

    @Option(name: .long, help: "Fraction of weights active (repeatable; default 0.5, 0.3, 0.2, 0.1, 0.05).")
    var density: [Double] = []

    @Option(name: .long, help: ArgumentHelp("Also draw the speed-up against sparsity per layer into this .png or .svg.", valueName: "file"))
    var plot: String?

    func validate() throws {
        if let bad = density.first(where: { !($0 > 0 && $0 <= 1) }) { throw ValidationError("--density must be in (0, 1] (got \(bad))") }
        if let plot, BenchPlots.format(plot) == nil { throw ValidationError("--plot must name a .png or .svg file (got \(plot))") }
    }

    func run() throws {
        let log = global.bootstrap("svite.bench")
        let file = try RunConfig.resolve(lane.config)
        let result = SparseLinearBenchmark(config: file.model, configName: file.name, laneBatch: lane.laneBatch,
                                           densities: density.isEmpty ? [0.5, 0.3, 0.2, 0.1, 0.05] : density, repeats: lane.repeats).run { log.info("\($0)") }
        try printResult(result, json: lane.json) { result.table }
        if let plot { try BenchPlots.layers(result, to: plot) }
    }
}

struct BenchComm: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "comm",
        abstract: "Time the coordinator's side of a step: decode and average worker gradients, apply AdamW, encode parameters.",
        discussion: """
        Synthetic gradient frames (one per worker) go through everything the coordinator does \
        with a real push except the socket: header and payload checksums, LZ4, the value \
        codec, the images-weighted average; then one AdamW step and a parameters frame for \
        every worker; and a worker's side, one gradient frame encoded. Prints frames decoded \
        per second, uplink payload GB/s and steps per second for each config and gradient \
        codec (fp32, bf16, int8, int4).

        Then the socket itself (--no-sockets to skip): a worker's DEALER and a coordinator's \
        ROUTER on loopback, each with its own ZeroMQ I/O thread, stream gradient-sized frames \
        and do push/reply round trips, plaintext and with CURVE (the encryption every frame \
        pays once --secret-key is set), and the ratio of the two.

        Example: svite bench comm --config fmnist-tiny --config deit-tiny --workers 4
        """
    )

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Configs to measure (repeatable).")
    var config: [String] = ["fmnist-tiny", "deit-tiny"]

    @Option(name: .long, help: "Workers pushing each step.")
    var workers: Int = 4

    @Option(name: .long, help: "Timed steps per config.")
    var steps: Int = 10

    @Flag(name: .long, inversion: .prefixedNo, help: "Also time the loopback socket, plaintext and CURVE.")
    var sockets = true

    @Flag(name: .long, help: "Time only the loopback socket (frames of each config's fp32 gradient size).")
    var socketsOnly = false

    @Option(name: .long, help: ArgumentHelp("Megabytes each socket measurement streams (at least 10 frames).", valueName: "MB"))
    var socketMegabytes: Int = 500

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    struct Report: Encodable {
        var steps: [CommBenchmark.Result]
        var sockets: [SocketBenchmark.Result]
    }

    func validate() throws {
        guard workers >= 1 && workers <= 256 else { throw ValidationError("--workers must be 1 to 256 (got \(workers))") }
        guard socketMegabytes >= 1 && socketMegabytes <= 100_000 else { throw ValidationError("--socket-megabytes must be 1 to 100000 (got \(socketMegabytes))") }
        guard steps >= 3 else { throw ValidationError("--steps must be at least 3 (got \(steps))") }
    }

    func run() throws {
        _ = global.bootstrap("svite.bench")
        BLAS.setThreads(1)
        var rows: [CommBenchmark.Result] = []
        var frameSizes: [(config: String, bytes: Int)] = []
        for name in config {
            let file = try RunConfig.resolve(name)
            if socketsOnly {
                frameSizes.append((file.name, CommBenchmark.gradientFrameBytes(config: file.model)))
                continue
            }
            for codec in ValueCodec.allCases {
                var o = CommBenchmark.Options(config: file.model, configName: file.name)
                o.workers = workers; o.steps = steps; o.codec = codec
                rows.append(try CommBenchmark(o).run())
            }
        }
        frameSizes += rows.filter { $0.codec == "fp32" }.map { ($0.config, $0.gradientFrameBytes) }
        var socketRows: [SocketBenchmark.Result] = []
        if sockets || socketsOnly {
            for (label, bytes) in frameSizes {
                for security in [SocketBenchmark.Security.plain, .curve] {
                    var o = SocketBenchmark.Options(frameBytes: bytes, label: label)
                    o.security = security
                    o.frames = max(10, min(1000, socketMegabytes * 1_000_000 / max(bytes, 1)))
                    socketRows.append(try SocketBenchmark(o).run())
                }
            }
        }
        try printResult(Report(steps: rows, sockets: socketRows), json: json) {
            [rows.isEmpty ? nil : CommBenchmark.table(rows), socketRows.isEmpty ? nil : SocketBenchmark.table(socketRows)]
                .compactMap { $0 }.joined(separator: "\n\n")
        }
    }
}

struct BenchCluster: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Time the real coordinator with N simulated workers on loopback, dense against top-k.",
        discussion: """
        The coordinator is the one `svite train` runs (socket thread, aggregation, AdamW, \
        the downlink); the workers are simulated: DEALER sockets in one thread of this process \
        that answer every step at once with a gradient frame made beforehand (dense fp32, or \
        each worker's own top-k of a random gradient). Reports, for each worker count, steps \
        per second, the coordinator's CPU per step (the simulated workers' thread taken out), \
        bytes per worker and step both ways, the bytes through the coordinator per step, and \
        whether one step per second per worker fits in a core and 10 Gbit/s.

        Example: svite bench cluster --config deit-tiny --workers 1 --workers 8 --workers 32
        """
    )

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Configs to measure (repeatable).")
    var config: [String] = ["fmnist-tiny", "deit-tiny"]

    @Option(name: .long, help: "Simulated worker counts (repeatable).")
    var workers: [Int] = [1, 2, 4, 8, 16, 32, 64]

    @Option(name: .long, help: "Top-k density of the compressed rows.")
    var density: Double = 0.01

    @Option(name: .long, help: "Value codec of the compressed rows (int8, bf16 or fp32).")
    var codec: ValueCodec = .bf16

    @Flag(name: .long, inversion: .prefixedNo, help: "Also measure dense fp32 (no compression) at each worker count.")
    var dense = true

    @Option(name: .long, help: "Timed steps per row (after 2 warm-up steps).")
    var steps: Int = 10

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    func validate() throws {
        guard !workers.isEmpty, workers.allSatisfy({ (1 ... 256).contains($0) }) else { throw ValidationError("--workers must be 1 to 256 (got \(workers))") }
        guard density > 0 && density < 1 else { throw ValidationError("--density must be in (0, 1) (got \(density))") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1 (got \(steps))") }
    }

    func run() throws {
        let log = global.bootstrap("svite.bench")
        BLAS.setThreads(1)
        var rows: [ClusterBenchmark.Result] = []
        for name in config {
            let file = try RunConfig.resolve(name)
            for d in (dense ? [nil] : []) + [Optional(density)] {
                var o = ClusterBenchmark.Options(config: file)
                o.workers = workers; o.density = d; o.codec = codec; o.steps = steps
                rows += try ClusterBenchmark(o).run(log: log)
            }
        }
        try printResult(rows, json: json) { ClusterBenchmark.table(rows) }
    }
}

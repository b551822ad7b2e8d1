import ArgumentParser
import Config
import Core
import Foundation
import Model
import Training

struct ExperimentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "experiment",
        abstract: "Run a list of config variants and write their results table.",
        discussion: """
        Each variant trains into runs/experiments/NAME/VARIANT (with `seeds:` in the file, \
        once per seed into VARIANT/seed-N, the first seed of every variant first). A \
        finished run is skipped, an interrupted one resumes from its last checkpoint, so \
        the list can be worked through over several invocations (--max-variants, --only). \
        After every run, docs/results/NAME.md and NAME.json are rewritten in the paper's \
        form: model, sparsity (#params), FLOPs saving, top-1 (mean ± std over seeds), \
        the mean wall time of a run, and the time saving. --time-steps measures that \
        saving fairly: it times one training step of every variant's final model against \
        the others, round by round in one process (a run's wall or CPU seconds depend on \
        what else the machine did), and the table then takes the saving from those steps; \
        without it the saving is in CPU seconds, fair only between runs on an idle machine. \
        NAME.json is also the experiment's record: a run whose row it holds, made with the \
        config the file asks for now, is not run again even when its run directory is gone \
        (commit the results and continue on another machine); --list shows each run's state.

        Example: svite experiment configs/experiments/fmnist-tiny.yaml --max-variants 2
        """
    )

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Experiment file (see configs/experiments/).", valueName: "file"))
    var file: String

    @Option(name: .long, help: "Run only the variant with this name.")
    var only: String?

    @Option(name: .long, help: "Run at most this many runs (variant × seed) in this invocation.")
    var maxVariants: Int = 1000

    @Flag(name: .long, help: "Run nothing; rewrite the results table from finished runs.")
    var reportOnly = false

    @Option(name: .long, help: ArgumentHelp("Threads for computation; 0: every core (default: the config's training.threads).", valueName: "n"))
    var threads: Int?

    @Option(name: .long, help: ArgumentHelp("Where the results table goes.", valueName: "dir"))
    var results: String = "docs/results"

    @Flag(name: .long, help: "Plain periodic lines instead of a live progress bar.")
    var plain = false

    @Flag(name: .long, help: "Run nothing; list every run with its state (finished, recorded, partial, to run).")
    var list = false

    @Flag(name: .long, help: "Run nothing; time a training step of each variant's final model, all in turn, and put the step times in the results.")
    var timeSteps = false

    @Option(name: .long, help: "With --time-steps: rounds (each variant's step once per round; medians are reported).")
    var stepRounds: Int = 15

    @Option(name: .long, help: "With --time-steps: images per timed step (default: the base config's training.batch_size).")
    var stepBatch: Int?

    func validate() throws {
        if stepRounds < 3 { throw ValidationError("--step-rounds must be at least 3, got \(stepRounds)") }
        if let b = stepBatch, b < 1 { throw ValidationError("--step-batch must be at least 1, got \(b)") }
        try ThreadCount.check(threads)
    }

    func run() throws {
        let log = global.bootstrap("svite.experiment")
        let e = try Experiment.load(file)
        let configs = try e.configs()
        if let only, !e.variants.contains(where: { $0.name == only || $0.slug == only }) {
            throw ValidationError("no variant named '\(only)' in \(file) (variants: \(e.variants.map(\.name).joined(separator: ", ")))")
        }
        var ran = 0
        let byVariant = Dictionary(uniqueKeysWithValues: zip(e.variants.map(\.name), configs))
        let recorded = try Experiment.recordedRows(resultsFile(e))
        if list {
            for r in e.runs {
                let dir = e.runDirectory(r)
                let c = e.config(r, variantConfig: byVariant[r.variant.name]!)
                let state = Experiment.isFinished(dir) ? "finished"
                    : e.recorded(r, fingerprint: Experiment.fingerprint(c), in: recorded) != nil ? "recorded in \(resultsFile(e))"
                    : !Checkpoint.list(in: "\(dir)/checkpoints").isEmpty ? "partial (resumes)" : "to run"
                print("\(label(r))\t\(Experiment.fingerprint(c))\t\(state)")
            }
            return
        }
        if timeSteps {
            try timeVariantSteps(e, configs: byVariant)
            try report(e, configs: byVariant, recorded: recorded)
            return
        }
        for r in e.runs where !reportOnly && ran < maxVariants {
            let v = r.variant
            if let only, v.name != only && v.slug != only { continue }
            let dir = e.runDirectory(r)
            let label = label(r)
            var runConfig = e.config(r, variantConfig: byVariant[v.name]!)
            if Experiment.isFinished(dir) {
                FileHandle.standardError.write(Data("\(label): finished, skipped\n".utf8))
                continue
            }
            if e.recorded(r, fingerprint: Experiment.fingerprint(runConfig), in: recorded) != nil {
                FileHandle.standardError.write(Data("\(label): recorded in \(resultsFile(e)), skipped\n".utf8))
                continue
            }
            // Taken before anything in the run's directory is read or written: a run another
            // process trains is refused at once.
            let lock = try RunDirectoryLock(dir, recordingHolder: false)
            defer { lock.release() }
            var options = Trainer.Options(runDirectory: dir)
            options.lock = lock
            options.threads = threads.map(ThreadCount.resolve)
            if !Checkpoint.list(in: "\(dir)/checkpoints").isEmpty {
                let contents = try Checkpoint.read(try Checkpoint.locate(dir))
                options.resume = contents
                runConfig = contents.config
            }
            FileHandle.standardError.write(Data("== \(label) → \(dir)\n".utf8))
            let display = ProgressDisplay(interactive: plain ? false : nil)
            let stop = StopFlag()
            StopSignals.install(stop) {
                FileHandle.standardError.write(Data("\nstopping after this step; the experiment resumes here next time\n".utf8))
            }
            let summary = try Trainer(config: runConfig, options: options, logger: log).run(stop: stop, observe: display.handle)
            display.finish()
            ran += 1
            try report(e, configs: byVariant, recorded: recorded)
            if summary.stopped { return }
        }
        try report(e, configs: byVariant, recorded: recorded)
    }

    /// Times each variant's final model against the others and stores the result in
    /// NAME.json (`step_timing`), where the table finds it.
    func timeVariantSteps(_ e: Experiment, configs: [String: RunConfig]) throws {
        let base = try RunConfig.resolve(e.base, overrides: e.common)
        let runs = e.variants.map { (name: $0.name, config: configs[$0.name]!) }
        guard let dense = e.variants.first(where: { v in configs[v.name]!.sparsity.method == .dense && configs[v.name]!.model == base.model }) else {
            throw ConfigError(file: e.file, key: "variants", message: "no dense variant of the base model to time the others against")
        }
        let timing = StepTiming(batch: stepBatch ?? base.training.batchSize, threads: threads.map(ThreadCount.resolve) ?? base.training.resolvedThreads,
                                rounds: stepRounds)
        let entries = try timing.time(runs: runs, reference: dense.name) { FileHandle.standardError.write(Data("\($0)\n".utf8)) }
        var variants: [String: Any] = [:]
        for x in entries {
            variants[x.name] = ["ms": x.seconds * 1e3, "saving": x.saving, "samples_ms": x.samples.map { $0 * 1e3 }]
            print(String(format: "%@: %.1f ms per step, %.1f%% saving against %@", x.name as NSString, x.seconds * 1e3, x.saving * 100,
                         dense.name as NSString))
        }
        let doc: [String: Any] = ["reference": dense.name, "batch": timing.batch, "threads": timing.threads, "rounds": timing.rounds,
                                  "precision": base.training.precision.rawValue, "sparse_kernels": base.compute.sparseKernels.rawValue,
                                  "machine": machineLine, "date": ISO8601DateFormatter().string(from: Date()), "variants": variants]
        try Experiment.writeStepTiming(doc, to: resultsFile(e))
    }

    var machineLine: String { "\(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.hostName)" }

    func label(_ r: Experiment.Run) -> String { r.variant.name + (r.seed.map { " (seed \($0))" } ?? "") }

    func resultsFile(_ e: Experiment) -> String { "\(results)/\(e.name).json" }

    /// Rows of the runs finished on disk, and for the others the rows recorded earlier
    /// with their current fingerprint (rows of configs the file no longer asks for drop out).
    func report(_ e: Experiment, configs: [String: RunConfig], recorded: [[String: Any]]) throws {
        var rows: [[String: Any]] = []
        for r in e.runs {
            if Experiment.isFinished(e.runDirectory(r)) {
                var row = try Experiment.result(variant: r.variant, dir: e.runDirectory(r))
                if let s = r.seed { row["seed"] = Int(s) }
                rows.append(row)
            } else if let row = e.recorded(r, fingerprint: Experiment.fingerprint(e.config(r, variantConfig: configs[r.variant.name]!)), in: recorded) {
                rows.append(row)
            }
        }
        let base = try RunConfig.resolve(e.base, overrides: e.common)
        let dense = ViTModel(config: base.model)
        try FileManager.default.createDirectory(atPath: results, withIntermediateDirectories: true)
        let machine = machineLine
        var md = "# \(e.name)\n\nFrom `svite experiment \(e.file)`: base config `\(e.base)` with \(e.common.joined(separator: ", ")). "
        md += "Sparsity and #Para. count every parameter of the model (the prunable linear layers and the rest); "
        md += "FLOPs are per image, forward, with linear layers scaled by their density (attention products are not) "
        md += "or, for structured runs, those of the compact model (attention products only for kept heads); "
        let stepTiming = try Experiment.recordedStepTiming(resultsFile(e))
        md += "time is the mean wall time of a whole run (training and an evaluation per epoch) and depends on what else the machine did; "
        if let t = stepTiming {
            md += "time saving is per training step (batch assembly, forward and backward of the final model: a structured run's compact model, "
            md += "a token selector at the end of its schedule), each variant's step timed in turn with every other's, "
            md += "\(t["rounds"] as? Int ?? 0) rounds in one process (`svite experiment --time-steps`, batch \(t["batch"] as? Int ?? 0), "
            md += "\(t["threads"] as? Int ?? 0) threads, \(t["machine"] as? String ?? "?"), \(t["date"] as? String ?? "?")), "
            md += "1 − the median per-round ratio to \(t["reference"] as? String ?? "Dense"); "
            if let kernels = t["sparse_kernels"] as? String {
                md += "the masked layers of unstructured runs were timed as `compute.sparse_kernels: \(kernels)` chose them "
                md += "(sparse kernels where faster on this machine, else dense products on masked weights) in \(t["precision"] as? String ?? "?"); "
            } else {
                md += "unstructured sparsity ran dense products on masked weights, so its FLOPs saving was not a time saving; "
            }
        } else {
            md += "time saving is in CPU seconds against Dense, fair only between runs made on an otherwise idle machine "
            md += "(`svite experiment --time-steps` times step against step); "
        }
        md += "top-1 is on the test split after the last epoch. Machine: \(machine).\n\n"
        md += e.table(rows: rows, denseParameters: dense.layout.parameterCount, denseFLOPs: dense.forwardFLOPsPerImage,
                      stepTiming: stepTiming?["variants"] as? [String: Any])
        try md.write(toFile: "\(results)/\(e.name).md", atomically: true, encoding: .utf8)
        var document: [String: Any] = ["name": e.name, "base": e.base, "rows": rows]
        if let stepTiming { document["step_timing"] = stepTiming }
        let json = try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .prettyPrinted])
        try AtomicFile.write(resultsFile(e), data: json)
        print("results: \(results)/\(e.name).md (\(rows.count) of \(e.runs.count) runs finished)")
    }
}

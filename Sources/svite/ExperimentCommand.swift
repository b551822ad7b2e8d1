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
        time and time saving (in CPU seconds; fair only between runs on an otherwise idle \
        machine, since spinning compute threads burn more of them when starved). \
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

    @Option(name: .long, help: "Threads for computation (default: the config's).")
    var threads: Int?

    @Option(name: .long, help: ArgumentHelp("Where the results table goes.", valueName: "dir"))
    var results: String = "docs/results"

    @Flag(name: .long, help: "Plain periodic lines instead of a live progress bar.")
    var plain = false

    @Flag(name: .long, help: "Run nothing; list every run with its state (finished, recorded, partial, to run).")
    var list = false

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
            var options = Trainer.Options(runDirectory: dir)
            options.threads = threads
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
        let machine = "\(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.hostName)"
        var md = "# \(e.name)\n\nFrom `svite experiment \(e.file)`: base config `\(e.base)` with \(e.common.joined(separator: ", ")). "
        md += "Sparsity and #Para. count every parameter of the model (the prunable linear layers and the rest); "
        md += "FLOPs are per image, forward, with linear layers scaled by their density (attention products are not) "
        md += "or, for structured runs, those of the compact model (attention products only for kept heads); "
        md += "time is the whole run (training and an evaluation per epoch), its saving against Dense, fair only between runs "
        md += "made on an otherwise idle machine (`svite bench model` times step against step alternately); "
        md += "top-1 is on the test split after the last epoch. Machine: \(machine).\n\n"
        md += e.table(rows: rows, denseParameters: dense.layout.parameterCount, denseFLOPs: dense.forwardFLOPsPerImage)
        try md.write(toFile: "\(results)/\(e.name).md", atomically: true, encoding: .utf8)
        let json = try JSONSerialization.data(withJSONObject: ["name": e.name, "base": e.base, "rows": rows], options: [.sortedKeys, .prettyPrinted])
        try AtomicFile.write(resultsFile(e), data: json)
        print("results: \(results)/\(e.name).md (\(rows.count) of \(e.runs.count) runs finished)")
    }
}

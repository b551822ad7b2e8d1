import ArgumentParser
import Foundation
import Training

/// Options naming a config: a file or built-in name, plus `--set` overrides.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Config file, or a built-in name (default, fmnist-tiny, deit-tiny, deit-small, deit-base).", valueName: "file-or-name"))
    var config: String?

    @Option(name: .customLong("set"), help: ArgumentHelp("Override a config key, e.g. --set training.epochs=3 --set optimizer.lr=5e-4 (repeatable; values are YAML).", valueName: "key=value"))
    var overrides: [String] = []

    func validate() throws {
        for o in overrides where !o.contains("=") {
            throw ValidationError("--set needs key=value, got '\(o)' (e.g. --set training.epochs=3)")
        }
    }

    func load(default name: String = "default") throws -> RunConfig {
        try RunConfig.resolve(config ?? name, overrides: overrides)
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a ViT: data, optimizer, evaluation each epoch, checkpoints, metrics.",
        discussion: """
        With no arguments, trains the built-in `default` config (configs/default.yaml) on \
        Fashion-MNIST. Everything goes to a run directory (runs/NAME unless --out): \
        config.yaml (the effective config), metrics.jsonl (one JSON object per line: train \
        windows, evaluations) and checkpoints/step-NNNNNNNN.safetensors (weights, optimizer \
        moments, step, data cursor and config; the last few are kept).

        Ctrl-C (or SIGTERM) stops after the current step and writes a checkpoint; \
        `svite train --resume RUN_DIR` then continues exactly where it stopped. The same \
        config, seed and thread count give a bit-identical run.

        Examples:
          svite train
          svite train --config fmnist-tiny --set training.epochs=3
          svite train --resume runs/fmnist-tiny
          svite train --config configs/fmnist-tiny.yaml --init model.safetensors --out runs/finetune
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var configOptions: ConfigOptions

    @Option(name: .long, help: ArgumentHelp("Continue a run: its directory or a checkpoint file. The stored config is used (--set still applies).", valueName: "dir-or-checkpoint"))
    var resume: String?

    @Option(name: .customLong("init"), help: ArgumentHelp("Start from these weights (safetensors with timm names, or a checkpoint) instead of a fresh initialisation.", valueName: "file"))
    var initWeights: String?

    @Option(name: .long, help: ArgumentHelp("Run directory (default: runs/NAME, or runs/NAME-2, … if taken).", valueName: "dir"))
    var out: String?

    @Option(name: .long, help: "Threads for computation (default: the config's training.threads; 0 there means all cores).")
    var threads: Int?

    @Flag(name: .long, help: "Plain periodic lines instead of a live progress bar, even on a terminal.")
    var plain = false

    mutating func validate() throws {
        if resume != nil && configOptions.config != nil {
            throw ValidationError("--resume uses the config stored in the checkpoint; drop --config (use --set to change a setting)")
        }
        if resume != nil && initWeights != nil {
            throw ValidationError("--resume and --init cannot be combined: a resumed run already has its weights")
        }
        if let t = threads, t < 1 || t > 1024 {
            throw ValidationError("--threads must be between 1 and 1024 (got \(t))")
        }
    }

    func run() throws {
        let log = global.bootstrap("svite.train")
        var options: Trainer.Options
        let config: RunConfig
        if let resume {
            let path = try Checkpoint.locate(resume)
            let contents = try Checkpoint.read(path, overrides: configOptions.overrides)
            config = contents.config
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
            let runDir = dir.lastPathComponent == "checkpoints" ? dir.deletingLastPathComponent().path : dir.path
            options = Trainer.Options(runDirectory: out ?? runDir)
            options.resume = contents
        } else {
            config = try configOptions.load()
            options = Trainer.Options(runDirectory: try out.map(Self.checkFresh) ?? Self.freshRunDirectory(config.name))
            options.initWeights = initWeights
        }
        options.threads = threads
        let trainer = try Trainer(config: config, options: options, logger: log)
        let display = ProgressDisplay(interactive: plain ? false : nil)
        let stop = StopFlag()
        StopSignals.install(stop) {
            FileHandle.standardError.write(Data("\nstopping after this step and writing a checkpoint (Ctrl-C again to quit at once)\n".utf8))
        }
        let summary = try trainer.run(stop: stop, observe: display.handle)
        display.finish()
        var lines: [String] = []
        let head = summary.stopped ? "stopped at step \(summary.steps)" : "done: \(summary.steps) steps"
        if let e = summary.lastEval {
            lines.append(String(format: "%@ in %@, test accuracy %.2f%% (loss %.4f)", head, Format.duration(summary.elapsedSeconds), e.accuracy * 100, e.loss))
        } else {
            lines.append("\(head) in \(Format.duration(summary.elapsedSeconds))")
        }
        if let c = summary.checkpoint { lines.append("checkpoint: \(c)") }
        lines.append("metrics:    \(summary.metrics)")
        if summary.stopped {
            lines.append("resume:     svite train --resume \(summary.runDirectory)")
        } else {
            lines.append("export:     svite export \(summary.runDirectory) --out \(summary.runDirectory)/model.safetensors")
        }
        print(lines.joined(separator: "\n"))
    }

    static func checkFresh(_ dir: String) throws -> String {
        if !Checkpoint.list(in: "\(dir)/checkpoints").isEmpty {
            throw ValidationError("\(dir) already holds a run; continue it with --resume \(dir), or choose another --out")
        }
        return dir
    }

    static func freshRunDirectory(_ name: String) -> String {
        let fm = FileManager.default
        var candidate = "runs/\(name)"
        var n = 2
        while fm.fileExists(atPath: candidate) {
            candidate = "runs/\(name)-\(n)"
            n += 1
        }
        return candidate
    }
}

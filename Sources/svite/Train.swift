import ArgumentParser
import Config
import Core
import Foundation
import Coordinator
import Logging
import Monitoring
import Model
import Training

/// Options naming a config: a file or built-in name, plus `--set` overrides.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Config file, or a built-in name (\(BuiltinConfigs.all.keys.sorted().joined(separator: ", "))).", valueName: "file-or-name"))
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

/// What every command that runs training shares: the config, resume, initial weights,
/// the run directory, threads and the display.
struct RunOptions: ParsableArguments {
    @OptionGroup var configOptions: ConfigOptions
    @OptionGroup var compute: ComputeOptions

    @Option(name: .long, help: ArgumentHelp("Continue a run: its directory or a checkpoint file. The stored config is used (--set still applies).", valueName: "dir-or-checkpoint"))
    var resume: String?

    @Option(name: .customLong("init"), help: ArgumentHelp("Start from these weights (safetensors with timm names, or a checkpoint) instead of a fresh initialisation.", valueName: "file"))
    var initWeights: String?

    @Option(name: .long, help: ArgumentHelp("Run directory (default: runs/NAME, or runs/NAME-2, … if taken).", valueName: "dir"))
    var out: String?

    @Option(name: .long, help: ArgumentHelp("Threads for computation; 0: every core (default: the config's training.threads).", valueName: "n"))
    var threads: Int?

    @Flag(name: .long, help: "Plain periodic lines instead of a live progress bar, even on a terminal.")
    var plain = false

    @Flag(name: .long, help: "With --out: resume the run there if it has a checkpoint, else start it (for services that restart).")
    var autoResume = false

    func validate() throws {
        if autoResume && (out == nil || resume != nil) {
            throw ValidationError("--auto-resume needs --out DIR (and no --resume)")
        }
        if resume != nil && configOptions.config != nil {
            throw ValidationError("--resume uses the config stored in the checkpoint; drop --config (use --set to change a setting)")
        }
        if resume != nil && initWeights != nil {
            throw ValidationError("--resume and --init cannot be combined: a resumed run already has its weights")
        }
        try ThreadCount.check(threads)
    }

    /// The workers recorded in the checkpoint this invocation resumes from (nil: not a
    /// resume, or a checkpoint from before they were recorded).
    func resumedWorkers() -> Int? {
        var resume = self.resume
        if autoResume, let out, !Checkpoint.list(in: "\(out)/checkpoints").isEmpty { resume = out }
        guard let resume else { return nil }
        return (try? Checkpoint.newestValid(resume))?.contents.state.workers
    }

    /// The config and trainer options this invocation asks for.
    func prepare(log: Logger? = nil) throws -> (RunConfig, Trainer.Options) {
        var options: Trainer.Options
        let config: RunConfig
        var resume = self.resume
        if autoResume, let out, !Checkpoint.list(in: "\(out)/checkpoints").isEmpty {
            resume = out
        }
        if let resume {
            // The newest checkpoint that reads back whole and is of this run's model; the
            // ones passed over are named with why.
            let (contents, skipped) = try Checkpoint.newestValid(resume, overrides: configOptions.overrides + compute.overrides)
            for s in skipped { log?.warning("not resuming from \(s.path): \(s.reason)") }
            let path = contents.file.path
            if !skipped.isEmpty { log?.warning("resuming from \(path) (step \(contents.state.step)) instead") }
            config = contents.config
            options = Trainer.Options(runDirectory: out ?? Checkpoint.runDirectory(of: path))
            options.resume = contents
            warnAboutEditedConfig(options.runDirectory, using: config, log: log)
        } else {
            config = try RunConfig.resolve(configOptions.config ?? environment["SVITE_CONFIG"] ?? "default",
                                           overrides: configOptions.overrides + compute.overrides)
            options = Trainer.Options(runDirectory: try out.map(Train.checkFresh) ?? Train.freshRunDirectory(config.name))
            options.initWeights = initWeights
        }
        options.threads = threads.map(ThreadCount.resolve)
        return (config, options)
    }

    /// A resume trains with the checkpoint's config (and --set): keys edited in the run's
    /// config.yaml since are named, with the --set that would apply them (before: the
    /// file was silently rewritten with the old values).
    func warnAboutEditedConfig(_ runDirectory: String, using config: RunConfig, log: Logger?) {
        let file = "\(runDirectory)/config.yaml"
        guard let log, let text = try? String(contentsOfFile: file, encoding: .utf8),
              let edited = try? RunConfig.parse(yaml: text, file: file) else { return }
        let set = Set(configOptions.overrides.compactMap { $0.split(separator: "=").first.map(String.init) } + compute.overrides.compactMap { $0.split(separator: "=").first.map(String.init) })
        let changed = edited.differences(from: config).filter { !set.contains($0.key) }
        guard !changed.isEmpty else { return }
        let list = changed.map { "\($0.key): \($0.value) in the file, \($0.other) in the checkpoint" }.joined(separator: "; ")
        let sets = changed.map { "--set \($0.key)=\($0.value)" }.joined(separator: " ")
        let message = "\(file) was edited since the checkpoint (\(list)); a resume trains with the checkpoint's config and --set, "
            + "and config.yaml is rewritten with it. To apply the edit, resume with \(sets)"
        log.warning("\(message)")
    }

    /// Trains: in this process (cluster nil) or as the coordinator of workers, started
    /// here (`localWorkers` > 0) or elsewhere.
    func execute(log: Logger, cluster: ClusterOptions?, metrics: String? = nil, localWorkers: Int = 0, workerThreads: Int = 1,
                 logLevel: String = "info", command: String = "svite train") throws {
        var (config, options) = try ConfigExit.map { try prepare(log: log) }
        // Before any file in the run directory is touched or a worker started: a second
        // trainer of a running run is refused at once and leaves its files alone. A run
        // directory not made yet is made and locked once the ports are bound, so a busy
        // port leaves nothing behind.
        var lock = FileManager.default.fileExists(atPath: options.runDirectory) ? try RunDirectoryLock(options.runDirectory, recordingHolder: false) : nil
        defer { lock?.release() }
        options.workers = cluster?.expectedWorkers ?? 0
        if localWorkers > 0, config.communication.gradientDensity == nil {
            // Workers in this machine: their "wire" is memory, and top-k would only cost
            // accuracy (and make the run depend on how busy the machine was).
            config.communication.gradientDensity = 1
            log.info("communication.gradient_density auto: every value, the workers being local processes (a coordinator of remote workers measures its links)")
        }
        var clusterSource: ClusterGradientSource?
        let status = RunStatus(config: config, parameters: ViTModel(config: config.model).layout.parameterCount)
        var metricsEndpoint: MetricsEndpoint?
        defer { metricsEndpoint?.stop() }
        if let cluster {
            let source = try ClusterGradientSource(config: config, options: cluster, logger: log)
            source.runStatus = status
            clusterSource = source
            options.source = { _, _, _ in source }
            // Before anything is written: a busy port stops the run with nothing made.
            if let address = metrics {
                do {
                    metricsEndpoint = try MetricsEndpoint(address: address) { [weak source] in source?.statusSnapshot }
                } catch {
                    source.finish(reason: "error: \(error)")
                    throw CommandFailure("\(error)")
                }
            }
        }
        if lock == nil {
            do {
                lock = try RunDirectoryLock(options.runDirectory, recordingHolder: false)
            } catch {
                clusterSource?.finish(reason: "error: \(error)")
                throw error
            }
        }
        options.lock = lock
        let display = ProgressDisplay(interactive: plain ? false : nil)
        let stop = StopFlag()
        StopSignals.install(stop) {
            FileHandle.standardError.write(Data("\nstopping after this step and writing a checkpoint (Ctrl-C again to quit at once)\n".utf8))
        }
        let workers = LocalWorkers()
        defer { workers.stop() }
        if metrics != nil && cluster == nil {
            log.warning("--metrics is served by the coordinator; this run trains in process (--workers 0) and serves none")
        }
        defer { if clusterSource?.statusEndpoint != nil { StatusFile.remove(runDirectory: options.runDirectory) } }
        let trainer: Trainer
        do {
            trainer = try Trainer(config: config, options: options, logger: log)
            if trainer.isFinished {
                // A restarted service (--auto-resume) or a second --resume: nothing to train,
                // nothing written; connected workers are told the run is over.
                clusterSource?.finish(reason: "done")
                let accuracy = options.resume?.state.lastEvalAccuracy.map { String(format: ", test accuracy %.2f%%", $0 * 100) } ?? ""
                print("\(options.runDirectory) already finished: step \(trainer.server.step) of \(trainer.totalSteps)\(accuracy); nothing to do\n"
                    + "export:     \(RunHistory.exportCommand(options.runDirectory))\n"
                    + "longer:     svite train --resume \(options.runDirectory) --set training.epochs=N (more epochs than the run had)")
                return
            }
            if let s = clusterSource {
                display.line("coordinator on \(s.endpoint)\(s.statusEndpoint.map { ", status on \($0) (svite status \(options.runDirectory))" } ?? "")")
                if let e = s.statusEndpoint { StatusFile.write(e, runDirectory: options.runDirectory, log: log) }
                if let endpoint = metricsEndpoint {
                    display.line("Prometheus metrics on \(endpoint.url)\(endpoint.host == "0.0.0.0" ? " (every interface)" : "")")
                }
                if localWorkers > 0 {
                    let endpoint = s.endpoint.replacingOccurrences(of: "0.0.0.0", with: "127.0.0.1")
                    try workers.start(count: localWorkers, threads: workerThreads, endpoint: endpoint,
                                      runDirectory: options.runDirectory, logLevel: logLevel)
                    display.line("started \(localWorkers) local worker(s) with \(workerThreads) thread(s) each; logs in \(options.runDirectory)/worker-*.log")
                }
            }
        } catch {
            clusterSource?.finish(reason: "error: \(error)")
            throw error
        }
        let summary: TrainingSummary
        do {
            summary = try trainer.run(stop: stop) { event in
                display.handle(event)
                status.observe(event)
            }
        } catch {
            clusterSource?.finish(reason: "error: \(error)")
            throw error
        }
        display.finish()
        var lines: [String] = []
        let head = summary.stopped ? "stopped at step \(summary.steps)" : "done: \(summary.steps) steps"
        if let e = summary.lastEval {
            lines.append(String(format: "%@ in %@, test accuracy %.2f%% (loss %.4f)", head, Format.duration(summary.elapsedSeconds), e.accuracy * 100, e.loss))
        } else {
            lines.append("\(head) in \(Format.duration(summary.elapsedSeconds))")
        }
        if let s = summary.sparsity, let heads = s.heads, let neurons = s.neurons {
            lines.append(String(format: "structure:  %d heads and %d MLP neurons kept; %.2fM of %.2fM parameters active; FLOPs saving %.1f%%",
                                heads, neurons, Double(s.activeParameters) / 1e6, Double(s.totalParameters) / 1e6, s.flopsSaving * 100))
        } else if let s = summary.sparsity {
            lines.append(String(format: "sparsity:   %.1f%% of prunable weights inactive; %.2fM of %.2fM parameters active; FLOPs saving %.1f%%; explored %.1f%% of prunable weights",
                                (1 - s.density) * 100, Double(s.activeParameters) / 1e6, Double(s.totalParameters) / 1e6,
                                s.flopsSaving * 100, s.explorationRate * 100))
            if let u = summary.untrainedWeights, u > 0, let active = summary.activePrunableWeights {
                lines.append(String(format: "            %.1f%% of the active prunable weights (%d) are still exactly zero: grown and not yet updated (svite masks shows where)",
                                    100 * Double(u) / Double(max(1, active)), u))
            }
        }
        if let w = summary.wire {
            lines.append(String(format: "wire:       %@ up and %@ down per worker and step (%.3fx and %.3fx of dense fp32, %@)",
                                StatusTable.bytes(w.upPerWorkerStep) as NSString, StatusTable.bytes(w.downPerWorkerStep) as NSString,
                                w.upRatio, w.downRatio, StatusTable.bytes(Double(w.denseFp32Bytes)) as NSString))
        }
        if let f = summary.varianceScale?.sorted(), !f.isEmpty {
            lines.append(String(format: "variance:   AdamW's frozen variance tracked: factors on sqrt(v) per tensor now %.2f (median), %.2f to %.2f",
                                f[f.count / 2], f.first!, f.last!))
        }
        if let c = summary.checkpoint { lines.append("checkpoint: \(c)") }
        lines.append("metrics:    \(summary.metrics)")
        if summary.stopped && summary.checkpoint == nil {
            lines.append("resume:     nothing to resume (no step was made); start it again with the same command")
        } else if summary.stopped {
            let same = command == "svite train" ? "" : " (and the same --bind, --status and --workers)"
            lines.append("resume:     \(command) --resume \(summary.runDirectory)\(same)")
        } else {
            lines.append("export:     \(RunHistory.exportCommand(summary.runDirectory))")
        }
        print(lines.joined(separator: "\n"))
        // A coordinator stopped before the end (SIGTERM from a supervisor, a node drain)
        // exits 75 (EX_TEMPFAIL), as its workers do: the run is not over, and a restart
        // policy that restarts failures brings it back to resume (--auto-resume).
        if summary.stopped && command == "svite coordinator" { throw ExitCode(75) }
    }
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a ViT: a coordinator and local workers, evaluation each epoch, checkpoints, metrics.",
        discussion: """
        With no arguments, trains the built-in `default` config (configs/default.yaml) on \
        Fashion-MNIST through a coordinator and local worker processes that speak the same \
        protocol as a cluster (--workers 0 trains in this one process instead). Everything \
        goes to a run directory (runs/NAME unless --out): config.yaml (the effective \
        config), metrics.jsonl (one JSON object per line, timestamped: train windows, evaluations, worker events; `svite plot` draws it), \
        checkpoints/step-NNNNNNNN.safetensors (weights, optimizer moments, step, data \
        cursor and config; the last few are kept) and worker-K.log.

        Ctrl-C (or SIGTERM) stops after the current step and writes a checkpoint; \
        `svite train --resume RUN_DIR` then continues exactly where it stopped. The same \
        config, seed and thread count give a bit-identical run.

        Examples:
          svite train
          svite train --config fmnist-tiny --set training.epochs=3
          svite train --resume runs/fmnist-tiny
          svite train --config configs/fmnist-tiny.yaml --init model.safetensors \\
              --out runs/finetune
        """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var runOptions: RunOptions
    @OptionGroup var cluster: ClusterCLIOptions

    @Option(name: .long, help: "Local worker processes (0: train in this process). Default: one per core, at most 2.")
    var workers: Int?

    @Option(name: .long, help: ArgumentHelp("Status socket endpoint ('none' for none).", valueName: "endpoint"))
    var status: String = environment["SVITE_STATUS"] ?? "tcp://127.0.0.1:*"

    func validate() throws {
        if let w = workers, w < 0 || w > 64 { throw ValidationError("--workers must be 0 to 64 (got \(w))") }
    }

    func run() throws {
        let log = global.bootstrap("svite.train")
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let total = runOptions.threads.map(ThreadCount.resolve) ?? cores
        var n = workers ?? Int(environment["SVITE_WORKERS"] ?? "") ?? min(2, max(1, total))
        // A resumed run keeps the workers it had (a different split is a different run),
        // unless --workers or SVITE_WORKERS says otherwise.
        if workers == nil, environment["SVITE_WORKERS"] == nil, let had = runOptions.resumedWorkers() {
            if had != n { log.info("resuming with \(had == 0 ? "no workers (in this process)" : "\(had) local worker(s)") as the run had; --workers changes it") }
            n = had
        }
        if n == 0 {
            try runOptions.execute(log: log, cluster: nil)
        } else {
            let perWorker = max(1, total / n)
            try runOptions.execute(log: log, cluster: cluster.options(bind: "tcp://127.0.0.1:*", status: status == "none" ? nil : status, workers: n),
                                   metrics: cluster.metricsAddress, localWorkers: n, workerThreads: perWorker, logLevel: global.logLevel)
        }
    }

    static func checkFresh(_ dir: String) throws -> String {
        if !Checkpoint.list(in: "\(dir)/checkpoints").isEmpty {
            throw CommandFailure("\(dir) already holds a run; continue it with --resume \(dir), or choose another --out")
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

/// A config that cannot be read (an unknown key, a bad value) exits 78 (EX_CONFIG) rather
/// than 1, so a supervisor tells it from a crash: systemd's units leave it alone
/// (`RestartPreventExitStatus=`) instead of starting it again every few seconds.
enum ConfigExit {
    static let status: Int32 = 78

    static func map<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as ConfigError {
            FileHandle.standardError.write(Data("Error: \(e)\n".utf8))
            throw ExitCode(status)
        }
    }
}

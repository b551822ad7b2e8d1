@testable import Compute
import Config
import Core
import Datasets
import Foundation
import Kernels
import Logging
import Model
import Optim
import Sparsity
import Testing
import TestSupport
@testable import Training

@Suite("training runs")
struct TrainerTests {
    let log = Logger(label: "test")

    func run(_ config: RunConfig, dir: String, stopAfter: Int? = nil, resume: Checkpoint.Contents? = nil,
             initWeights: String? = nil) throws -> (Trainer, TrainingSummary, [StepReport]) {
        var options = Trainer.Options(runDirectory: dir)
        options.resume = resume
        options.initWeights = initWeights
        let trainer = try Trainer(config: config, options: options, logger: log)
        let stop = StopFlag()
        var reports: [StepReport] = []
        let summary = try trainer.run(stop: stop) { event in
            if case .step(let r) = event {
                reports.append(r)
                if let s = stopAfter, r.step >= s { stop.raise() }
            }
        }
        return (trainer, summary, reports)
    }

    func bits(_ b: FloatBuffer) -> [UInt32] { b.array.map(\.bitPattern) }

    /// Train 2 epochs straight; train again, stop after 5 steps (mid-epoch), resume from
    /// the checkpoint: parameters and both AdamW moments equal bit for bit. A third run
    /// with the same config is bit-identical to the first.
    @Test(arguments: [[], ["sparsity.method=svite", "sparsity.update_interval=3", "sparsity.sparsity=0.6"],
                      ["sparsity.method=s2vite", "sparsity.update_interval=3", "sparsity.sparsity=0.6"],
                      ["sparsity.method=svite", "sparsity.update_interval=3", "sparsity.sparsity=0.6", "model.token_keep=0.75"]])
    func resumeContinuesExactlyAndRunsRepeat(sparse: [String]) throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: "\(dir)", train: 120, test: 40)
            let config = try tinyRunConfig(dataDir: dir, extra: sparse)
            let (straight, s1, _) = try run(config, dir: "\(dir)/a")
            #expect(s1.steps == 16 && !s1.stopped)

            let (_, s2, _) = try run(config, dir: "\(dir)/b", stopAfter: 5)
            #expect(s2.stopped && s2.steps == 5)
            let path = try Checkpoint.locate("\(dir)/b")
            #expect(path.hasSuffix("step-00000005.safetensors"))
            let contents = try Checkpoint.read(path)
            #expect(contents.state.epoch == 0 && contents.state.stepInEpoch == 5 && contents.state.optimizerUpdates == 5)
            let cpuAtCheckpoint = try #require(contents.state.cpuSeconds)
            #expect(cpuAtCheckpoint > 0)
            let (resumed, s3, _) = try run(contents.config, dir: "\(dir)/b", resume: contents)
            #expect(s3.steps == 16 && !s3.stopped)
            #expect(bits(resumed.server.params) == bits(straight.server.params))
            #expect(bits(resumed.server.optimizer.firstMoment) == bits(straight.server.optimizer.firstMoment))
            #expect(bits(resumed.server.optimizer.secondMoment!) == bits(straight.server.optimizer.secondMoment!))
            #expect(s3.lastEval?.accuracy == s1.lastEval?.accuracy)
            if let masks = straight.server.masks {
                #expect(bits(resumed.server.masks!.mask) == bits(masks.mask))
                #expect(bits(resumed.server.masks!.everActive) == bits(masks.everActive))
                #expect(resumed.server.masks!.version == masks.version && masks.version > 1)
                // Inactive weights and their moments are exactly zero; counts are the budget.
                for t in masks.prunable {
                    for i in 0 ..< t.count where masks.mask[t.offset + i] == 0 {
                        #expect(straight.server.params[t.offset + i] == 0)
                        #expect(straight.server.optimizer.firstMoment[t.offset + i] == 0)
                        #expect(straight.server.optimizer.secondMoment![t.offset + i] == 0)
                    }
                }
                let report = straight.sparsityReport!
                #expect(report.explorationRate > report.density)
                if masks.isStructured {
                    // 1 of 2 heads and ⌈0.4·32⌉ = 13 of 32 neurons in every block, after 5 updates.
                    let units = UnitSelection(masks: masks, model: straight.server.model)
                    #expect(units.heads.allSatisfy { $0.filter { $0 }.count == 1 })
                    #expect(units.neurons.allSatisfy { $0.filter { $0 }.count == 13 })
                    #expect(report.heads == 2 && report.neurons == 26 && report.flopsSaving > 0.3 && report.flopsSaving < 0.7)
                } else {
                    #expect(abs(report.density - 0.4) < 1e-3)
                    #expect(report.flopsSaving > 0.3 && report.flopsSaving < 0.6)
                }
            }

            let (again, _, _) = try run(config, dir: "\(dir)/c")
            #expect(bits(again.server.params) == bits(straight.server.params))

            // The resumed run's metrics log has each step once.
            let steps = MetricsLog.read("\(dir)/b/metrics.jsonl").filter { $0.kind == .train }.map(\.step)
            #expect(steps == Array(1 ... 16), "\(steps)")
            // CPU time carries across the resume into the end record.
            let end = try #require(MetricsLog.read("\(dir)/b/metrics.jsonl").last)
            #expect(end.kind == .end && (end.cpuSeconds ?? 0) > cpuAtCheckpoint && (end.time ?? 0) > 1.7e9)
            // A different seed gives a different run.
            let (other, _, _) = try run(try tinyRunConfig(dataDir: dir, extra: ["training.seed=6"]), dir: "\(dir)/d")
            #expect(bits(other.server.params) != bits(straight.server.params))
        }
    }

    /// A short run on a few hundred images: the loss falls and the test accuracy is far
    /// above chance.
    /// SViTE at 90% with its masked layers on the sparse kernels trains as on dense products:
    /// the same topology updates (grow steps rank inactive weights by the dense gradient
    /// either way) and the same weights to fp32 rounding, inactive weights zero in both.
    @Test func sparseKernelsTrainAsTheDenseProducts() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 96, test: 32)
            let extra = ["sparsity.method=svite", "sparsity.sparsity=0.9", "sparsity.update_interval=2", "training.epochs=1"]
            let (on, sOn, _) = try run(try tinyRunConfig(dataDir: dir, extra: extra + ["compute.sparse_kernels=on"]), dir: "\(dir)/on")
            let (off, sOff, _) = try run(try tinyRunConfig(dataDir: dir, extra: extra + ["compute.sparse_kernels=off"]), dir: "\(dir)/off")
            let choice = try #require((on.source as? LocalGradientSource)?.replica.sparseKernelChoice)
            #expect(choice.sparseSites.count == on.server.model.linearSites.count)
            #expect((off.source as? LocalGradientSource)?.replica.sparseKernelChoice == nil)
            let m = try #require(on.server.masks)
            #expect(m.version > 1, "the run made topology updates")
            #expect(m.mask.array == off.server.masks!.mask.array)
            var worst: Float = 0, scale: Float = 0
            for i in 0 ..< on.server.params.count {
                worst = max(worst, abs(on.server.params[i] - off.server.params[i]))
                scale = max(scale, abs(off.server.params[i]))
                if m.mask[i] == 0 { #expect(on.server.params[i] == 0) }
            }
            #expect(worst <= 1e-5 * scale, "max |Δθ| = \(worst), max |θ| = \(scale)")
            #expect(abs(sOn.lastEval!.accuracy - sOff.lastEval!.accuracy) <= 1.0 / 32)
        }
    }

    @Test func lossFallsOnASmallRun() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 320, test: 100)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=6", "training.log_every_steps=5",
                                                                 "data.augmentation=none"])
            let (_, summary, reports) = try run(config, dir: "\(dir)/run")
            let first = reports.first!.loss, last = reports.last!.loss
            #expect(last < 0.7 * first, "loss \(first) → \(last)")
            #expect((summary.lastEval?.accuracy ?? 0) > 0.5, "\(String(describing: summary.lastEval))")
            let records = MetricsLog.read(summary.metrics)
            #expect(records.filter { $0.kind == .eval }.count == 6)
            // Each evaluation says when its accuracy was known: after the train records before it.
            var latest = 0.0
            for r in records {
                guard let e = r.elapsedSeconds else { continue }
                if r.kind == .eval { #expect(e >= latest && e > 0, "eval at step \(r.step): \(e) s after \(latest) s") }
                if r.kind == .train || r.kind == .eval { latest = e }
            }
            #expect(records.filter { $0.kind == .eval }.allSatisfy { $0.elapsedSeconds != nil })
            #expect(Checkpoint.list(in: "\(dir)/run/checkpoints").count == 3)  // keep_checkpoints
        }
    }

    /// OMP, TP and GMP through the trainer: dense until they prune, then at the target
    /// density with pruned weights and moments at zero.
    @Test(arguments: ["omp", "tp", "gmp"])
    func pruningBaselinesReachTheirTarget(method: String) throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 160, test: 32)
            let config = try tinyRunConfig(dataDir: dir, extra: ["sparsity.method=\(method)", "sparsity.sparsity=0.6", "training.epochs=2"])
            var densities: [Double] = []
            let t = try Trainer(config: config, options: Trainer.Options(runDirectory: "\(dir)/run"), logger: log)
            _ = try t.run { event in
                if case .step(let r) = event { densities.append(r.sparsity!.density) }
            }
            #expect(densities.first == 1, "\(method) starts dense")
            #expect(abs(densities.last! - 0.4) < 0.01, "\(densities)")
            let masks = t.server.masks!
            for p in masks.prunable {
                for i in 0 ..< p.count where masks.mask[p.offset + i] == 0 {
                    #expect(t.server.params[p.offset + i] == 0 && t.server.optimizer.firstMoment[p.offset + i] == 0)
                }
            }
            if method == "gmp" { #expect(Set(densities).count >= 6, "gradual: \(densities)") } else { #expect(Set(densities).count == 2, "one shot") }
        }
    }

    @Test func exportedWeightsLoadAndEvaluateTheSame() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 64, test: 40)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=1"])
            let (trainer, summary, _) = try run(config, dir: "\(dir)/run")
            let fromCheckpoint = try LoadedWeights.load("\(dir)/run")
            #expect(fromCheckpoint.step == 4)
            #expect(bits(fromCheckpoint.params) == bits(trainer.server.params))
            let json = try fromCheckpoint.export(to: "\(dir)/model.safetensors")
            let exported = try SafeTensorsFile(path: "\(dir)/model.safetensors")
            #expect(Set(exported.entries.keys) == Set(trainer.server.model.layout.tensors.map(\.name)))
            let text = try Data(contentsOf: URL(fileURLWithPath: json))
            let info = try ExportInfo.decoder().decode(ExportInfo.self, from: text)
            #expect(info.timmKwargs?.embedDim == 16 && info.timmKwargs?.numHeads == 2 && info.step == 4 && info.tokenSelector == nil)
            // timm's keyword names as timm spells them.
            let raw = try #require(try JSONSerialization.jsonObject(with: text) as? [String: Any])
            #expect(Set((raw["timm_kwargs"] as? [String: Any])?.keys.map { $0 } ?? [])
                == ["img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads", "mlp_ratio", "class_token", "global_pool"])
            let reloaded = try LoadedWeights.load("\(dir)/model.safetensors")
            let r = try reloaded.evaluate(threads: 2, batch: 7)
            #expect(r.accuracy == summary.lastEval!.accuracy && r.images == 40)
            #expect(abs(r.loss - summary.lastEval!.loss) < 1e-5)

            // --init starts a new run from these weights (a checkpoint works too).
            for source in ["\(dir)/model.safetensors", try Checkpoint.locate("\(dir)/run")] {
                var options = Trainer.Options(runDirectory: "\(dir)/init")
                options.initWeights = source
                let started = try Trainer(config: config, options: options, logger: log)
                #expect(bits(started.server.params) == bits(trainer.server.params))
                #expect(started.server.step == 0)
            }
        }
    }

    /// S2ViTE and SSP through the trainer, then the compact export: smaller tensors, a
    /// config with per-block widths, and the masked model's accuracy and loss.
    @Test(arguments: ["s2vite", "ssp"])
    func structuredRunExportsACompactModelThatEvaluatesTheSame(method: String) throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 96, test: 40)
            let config = try tinyRunConfig(dataDir: dir, extra: ["sparsity.method=\(method)", "sparsity.sparsity=0.5",
                                                                 "sparsity.update_interval=2", "training.epochs=2"])
            var heads: [Int] = []
            let t = try Trainer(config: config, options: Trainer.Options(runDirectory: "\(dir)/run"), logger: log)
            let summary = try t.run { event in if case .step(let r) = event { heads.append(r.sparsity!.heads!) } }
            // SSP is dense (4 heads in 2 blocks) until it prunes at half the run; S2ViTE starts at its budget.
            #expect(heads.last == 2 && heads.first == (method == "ssp" ? 4 : 2), "\(heads)")
            let loaded = try LoadedWeights.load("\(dir)/run")
            let json = try loaded.export(to: "\(dir)/compact.safetensors", compact: true)
            let file = try SafeTensorsFile(path: "\(dir)/compact.safetensors")
            #expect(file.entries["blocks.0.attn.qkv.weight"]?.shape == [24, 16])
            #expect(file.entries["blocks.1.mlp.fc1.weight"]?.shape == [16, 16])
            #expect(file.entries["blocks.1.mlp.fc2.weight"]?.shape == [16, 16])
            let info = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as! [String: Any]
            let compact = info["compact"] as! [String: Any]
            #expect((compact["kept_heads"] as! [[Int]]).allSatisfy { $0.count == 1 })
            // No timm keyword arguments that would build the wrong (uncompacted) model; the
            // per-block head counts and widths instead.
            #expect(info["timm_kwargs"] == nil && compact["block_heads"] as? [Int] == [1, 1] && (compact["block_hidden"] as? [Int])?.count == 2)
            // The full-size export carries no masks: the units come back from the weights.
            _ = try loaded.export(to: "\(dir)/full.safetensors")
            let full = try LoadedWeights.load("\(dir)/full.safetensors")
            #expect(full.sparsityReport?.heads == 2 && full.sparsityReport?.activeParameters == loaded.sparsityReport?.activeParameters)
            let reloaded = try LoadedWeights.load("\(dir)/compact.safetensors")
            #expect(reloaded.config.model.blockHeads == [1, 1] && reloaded.masks == nil)
            let r = try reloaded.evaluate(threads: 2, batch: 7)
            #expect(r.accuracy == summary.lastEval!.accuracy && abs(r.loss - summary.lastEval!.loss) < 1e-5)
            // An unstructured run has nothing to compact.
            let plain = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=1"])
            _ = try run(plain, dir: "\(dir)/dense")
            #expect(throws: CheckpointError.self) { _ = try LoadedWeights.load("\(dir)/dense").export(to: "\(dir)/x.safetensors", compact: true) }
        }
    }

    @Test func badCheckpointsAreNamed() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 32, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=1"])
            _ = try run(config, dir: "\(dir)/run")
            let path = try Checkpoint.locate("\(dir)/run")
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))

            try bytes.prefix(bytes.count - 100).write(to: URL(fileURLWithPath: "\(dir)/cut.safetensors"))
            #expect(throws: SafeTensorsError.self) { _ = try Checkpoint.read("\(dir)/cut.safetensors") }

            // The same checkpoint against a different model: the layout check names it.
            let contents = try Checkpoint.read(path)
            var other = config
            other.model.depth = 1
            let server = ServerState(model: ViTModel(config: other.model), optimizer: other.optimizer,
                                     schedule: LRSchedule(base: 1, totalSteps: 1, warmupSteps: 0, warmupLR: 0, minLR: 0))
            let before = server.params.array
            do {
                try Checkpoint.restore(contents, into: server)
                Issue.record("restore into another layout should fail")
            } catch let e as CheckpointError {
                #expect(e.description.contains("layout differs"))
            }
            #expect(server.params.array == before, "nothing written on failure")

            // Plain weights are not a checkpoint.
            _ = try LoadedWeights.load(path).export(to: "\(dir)/w.safetensors")
            #expect(throws: CheckpointError.self) { _ = try Checkpoint.read("\(dir)/w.safetensors") }
            #expect(throws: CheckpointError.self) { _ = try Checkpoint.locate("\(dir)/nothing-here") }
        }
    }
}

/// metrics.jsonl lines are typed records: snake_case keys, a time stamp, and a NaN loss
/// kept as "nan" instead of the line being lost; a line that is not a record is skipped.
@Suite("metrics log")
struct MetricsLogTests {
    @Test func recordsRoundTripWithTimeAndNaN() throws {
        try withTemporaryDirectory { dir in
            let path = "\(dir)/metrics.jsonl"
            let log = try MetricsLog(path: path)
            var train = MetricsRecord(kind: .train, step: 20)
            train.loss = .nan; train.lr = 1e-3; train.imagesPerWorker = [64, 64]; train.bytesUpPerStep = 10
            log.write(train)
            var end = MetricsRecord(kind: .end, step: 20)
            end.cpuSeconds = 3.5
            log.write(end)
            let handle = try #require(FileHandle(forWritingAtPath: path))
            handle.seekToEndOfFile()
            handle.write(Data("not json\n".utf8))
            try handle.close()
            let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
            #expect(lines.count == 3 && lines[0].contains("\"loss\":\"nan\"") && lines[0].contains("\"images_per_worker\":[64,64]"))
            #expect(lines[0].contains("\"bytes_up_per_step\":10") && lines[1].contains("\"cpu_seconds\":3.5"))
            let back = MetricsLog.read(path)
            #expect(back.count == 2 && back[0].kind == .train && back[0].loss?.isNaN == true && back[1].kind == .end)
            #expect(back.allSatisfy { ($0.time ?? 0) > 1.7e9 } && back[0].imagesPerWorker == [64, 64] && back[1].cpuSeconds == 3.5)
        }
    }
}

extension MetricsLogTests {
    /// A diverging run (lr 1e30: the weights overflow within a few steps) stops with an
    /// error that names the step and says it diverged; no checkpoint holds non-finite
    /// weights, and metrics.jsonl ends with a `stopped` record giving the reason (before,
    /// the NaN went into the weights, the checkpoint state failed to encode, and the NaN
    /// lines were silently left out of the metrics).
    @Test func divergedRunStopsAndKeepsGoodCheckpoints() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 128, test: 32)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=1", "optimizer.lr=1.0e30", "schedule.warmup_steps=0",
                                                                 "training.checkpoint_every_steps=1"])
            let trainer = try Trainer(config: config, options: Trainer.Options(runDirectory: "\(dir)/run"), logger: Logger(label: "test"))
            var caught: TrainingError?
            do { _ = try trainer.run() } catch let e as TrainingError { caught = e }
            let error = try #require(caught, "the run did not stop")
            #expect(error.step < 8 && error.description.contains("not finite") && error.description.contains("diverged"), "\(error)")
            for (_, path) in Checkpoint.list(in: "\(dir)/run/checkpoints") {
                let w = try LoadedWeights.load(path)
                #expect(VectorOps.allFinite(w.params.pointer, w.params.count), "\(path) holds non-finite weights")
            }
            let last = try #require(MetricsLog.read("\(dir)/run/metrics.jsonl").last)
            #expect(last.kind == .stopped && last.step == error.step && last.reason?.contains("not finite") == true)
        }
    }
}

extension MetricsLogTests {
    /// A disk that refuses every write (/dev/full: "No space left on device") does not crash
    /// the writer (before: a fatal error in MetricsLog.write, rc 132): the lines wait in
    /// memory and the error is there to report.
    @Test func aFullDiskDoesNotCrashTheMetricsLog() throws {
        guard FileManager.default.fileExists(atPath: "/dev/full") else { return }
        let log = try MetricsLog(path: "/dev/full")
        for step in 1 ... 3 { log.write(MetricsRecord(kind: .train, step: step)) }
        #expect(log.unwrittenCount == 3 && log.lastError != nil && !log.flush())
    }
}

/// Checkpoints carry a checksum of their state, config and tensors: one flipped bit in the
/// newest is found, and resuming falls back to the newest good one, saying which it passed
/// over and why; a checkpoint of another model in the run directory is passed over too,
/// and does not make the run's own checkpoints be pruned (before: all three unnoticed).
@Suite("checkpoint integrity")
struct CheckpointIntegrityTests {
    @Test func damagedAndForeignCheckpointsArePassedOver() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 64, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=1", "training.checkpoint_every_steps=1"])
            _ = try Trainer(config: config, options: Trainer.Options(runDirectory: "\(dir)/run"), logger: Logger(label: "test")).run()
            let checkpoints = Checkpoint.list(in: "\(dir)/run/checkpoints")
            #expect(checkpoints.map(\.step) == [2, 3, 4])
            #expect(try Checkpoint.newestValid("\(dir)/run").contents.state.step == 4)

            // One bit of a weight in the newest.
            let newest = checkpoints.last!.path
            var bytes = try Data(contentsOf: URL(fileURLWithPath: newest))
            bytes[bytes.count - 100] ^= 0x04
            try bytes.write(to: URL(fileURLWithPath: newest))
            #expect(throws: CheckpointError.self) { _ = try Checkpoint.read(newest) }
            var (c, skipped) = try Checkpoint.newestValid("\(dir)/run")
            #expect(c.state.step == 3 && skipped.count == 1 && skipped[0].reason.contains("checksum"), "\(skipped)")

            // One character of the stored config in the next (same length, still valid YAML).
            let next = checkpoints[1].path
            var text = try Data(contentsOf: URL(fileURLWithPath: next))
            let needle = Data("keep_checkpoints: 3".utf8), changed = Data("keep_checkpoints: 4".utf8)
            let at = try #require(text.range(of: needle))
            text.replaceSubrange(at, with: changed)
            try text.write(to: URL(fileURLWithPath: next))
            (c, skipped) = try Checkpoint.newestValid("\(dir)/run")
            #expect(c.state.step == 2 && skipped.count == 2, "\(skipped)")

            // Another model's checkpoint with a later step.
            let other = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=1", "model.depth=1"])
            let foreign = try Trainer(config: other, options: Trainer.Options(runDirectory: "\(dir)/other"), logger: Logger(label: "test"))
            _ = try foreign.run()
            try FileManager.default.copyItem(atPath: try Checkpoint.locate("\(dir)/other"), toPath: "\(dir)/run/checkpoints/\(Checkpoint.fileName(step: 99))")
            (c, skipped) = try Checkpoint.newestValid("\(dir)/run")
            #expect(c.state.step == 2 && skipped.first?.reason.contains("another model") == true, "\(skipped)")
            Checkpoint.prune(in: "\(dir)/run/checkpoints", keep: 1, upTo: 4)
            #expect(Checkpoint.list(in: "\(dir)/run/checkpoints").map(\.step) == [4, 99])
        }
    }
}

extension CheckpointIntegrityTests {
    /// Two trainings of one run directory at once: the second is refused, naming the
    /// first's pid (before: both ran and wrote the same checkpoints); once the first is
    /// done, the directory is free again.
    @Test func oneTrainingPerRunDirectory() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 32, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=1"])
            try FileManager.default.createDirectory(atPath: "\(dir)/run", withIntermediateDirectories: true)
            let held = try RunDirectoryLock("\(dir)/run")
            let second = try Trainer(config: config, options: Trainer.Options(runDirectory: "\(dir)/run"), logger: Logger(label: "test"))
            #expect { _ = try second.run() } throws: { error in
                "\(error)".contains("another svite process (pid \(getpid()))")
            }
            held.release()
            let summary = try second.run()
            #expect(summary.steps == 2)
        }
    }
}

/// Evaluation memory does not grow with the eval batch: the forward passes take at most
/// 32 images a thread, so an eval batch of 500 holds a workspace of 64 images at 2 threads
/// (before: one of 500, 1.07 GB for fmnist-tiny), and the result is the same.
@Suite("evaluation memory")
struct EvaluationMemoryTests {
    @Test func evalWorkspacesAreBoundedAndResultsUnchanged() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 32, test: 200)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=1"])
            let model = ViTModel(config: config.model)
            let test = try config.data.load(.test)
            let params = FloatBuffer(count: model.layout.count)
            Initializer.initialize(params, layout: model.layout, seed: 3)
            func evaluator(_ batch: Int) -> Evaluator {
                Evaluator(model: model, assembler: BatchAssembler(dataset: test, mean: config.data.mean, std: config.data.std,
                                                                   augmentation: .none, seed: 0), batch: batch, threads: 2)
            }
            let big = evaluator(500), small = evaluator(7)
            let a = big.evaluate(params: params.pointer), b = small.evaluate(params: params.pointer)
            #expect(big.workspaces.keys.allSatisfy { $0 <= 64 }, "\(big.workspaces.keys.sorted())")
            #expect(a.count == 200 && a.correct == b.correct && abs(a.lossSum - b.lossSum) <= 1e-6 * abs(b.lossSum))
        }
    }
}

/// A gradient source that gives a fixed finite gradient, or NaN at chosen steps, and
/// keeps a fingerprint of the weights it was asked to compute on at each step.
final class PoisoningSource: GradientSource {
    let poisoned: (Int) -> Bool
    var buffer: FloatBuffer?
    var count = 0
    var seen: [Int: [Float]] = [:]
    init(poisoned: @escaping (Int) -> Bool) { self.poisoned = poisoned }
    func attach(server: ServerState) { count = server.params.count; buffer = FloatBuffer(count: count) }
    func gradient(params: UnsafePointer<Float>, work: StepWork, stop: StopFlag) throws -> StepGradient? {
        let g = buffer!.pointer
        seen[work.step] = Array(UnsafeBufferPointer(start: params, count: count))
        for i in 0 ..< count { g[i] = poisoned(work.step) && i % 97 == 5 ? .nan : Float(i % 7) * 1e-3 - 3e-3 }
        return StepGradient(gradient: g, result: BatchResult(lossSum: 64 * 2.3, correct: 6, count: 64))
    }
    func finish(reason: String) {}
}

extension MetricsLogTests {
    /// `training.on_nonfinite: skip`: a step whose averaged gradient holds a NaN is counted
    /// without an update (the weights the next step is computed on are the same weights,
    /// the optimizer counts only real updates), a `skipped` record says why, and the run
    /// ends with finite weights; more skips in a row than `max_skipped_steps` stop it.
    @Test func nonFiniteStepsAreSkippedWhenTheConfigSaysSo() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 128, test: 32)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=12", "training.on_nonfinite=skip",
                                                                 "training.max_skipped_steps=2", "training.log_every_steps=1"])
            let source = PoisoningSource { [3, 6, 7].contains($0) }
            var options = Trainer.Options(runDirectory: "\(dir)/run")
            options.source = { _, _, _ in source }
            let summary = try Trainer(config: config, options: options, logger: Logger(label: "test")).run()
            #expect(summary.steps == 12 && !summary.stopped)
            let state = try Checkpoint.read(Checkpoint.locate("\(dir)/run")).state
            #expect(state.step == 12 && state.optimizerUpdates == 9)
            // What a skip does: step 3 skipped, so step 4 computes on the weights of step 3;
            // a step that was applied changes them.
            #expect(source.seen[4] == source.seen[3] && source.seen[8] == source.seen[6] && source.seen[6] == source.seen[7])
            #expect(source.seen[3] != source.seen[2] && source.seen[9] != source.seen[8])
            let w = try LoadedWeights.load(Checkpoint.locate("\(dir)/run"))
            #expect(VectorOps.allFinite(w.params.pointer, w.params.count))
            let records = MetricsLog.read("\(dir)/run/metrics.jsonl")
            let skipped = records.filter { $0.kind == .skipped }
            #expect(skipped.map(\.step) == [4, 7, 8], "\(skipped.map(\.step))")
            #expect(skipped.allSatisfy { $0.reason?.contains("not finite") == true && $0.reason?.contains("skipped") == true })
            #expect(records.filter { $0.kind == .train }.allSatisfy { $0.loss?.isFinite == true })

            // Three in a row with at most two: the third stops the run, naming the setting.
            let always = PoisoningSource { $0 >= 5 }
            options = Trainer.Options(runDirectory: "\(dir)/run2")
            options.source = { _, _, _ in always }
            var caught: TrainingError?
            do { _ = try Trainer(config: config, options: options, logger: Logger(label: "test")).run() } catch let e as TrainingError { caught = e }
            let error = try #require(caught, "the run did not stop")
            #expect(error.step == 7 && error.description.contains("max_skipped_steps"), "\(error)")
        }
    }
}

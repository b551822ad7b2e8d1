import Compute
import Config
import Core
import Datasets
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Kernels
import Logging
import Model
import Optim
import Sparsity
import Steps

/// A training run in one process: a `ServerState` and a `Replica` joined directly. The
/// parameter server puts a wire between the same two pieces.
public final class Trainer {
    public let config: RunConfig
    public let runDirectory: String
    public let threads: Int
    /// What runs the matrix products here (decided from the config and the CPU).
    public let engine: EngineReport
    let log: Logger
    var metricsWarned = false
    let workers: Int?
    let heldLock: RunDirectoryLock?
    let train: ImageDataset
    let test: ImageDataset
    public let server: ServerState
    let source: GradientSource
    let evaluator: Evaluator
    let plan: EpochPlan
    public let totalSteps: Int
    let stepsPerEpoch: Int
    /// Top-k's schedule over the run (all dense when the run does not compress).
    public internal(set) var compression: CompressionSchedule
    /// `gradient_density: auto`'s decision, once taken (`WireChoice.swift`).
    public internal(set) var wireDecision: WireDecision?
    var elapsedBefore: Double = 0
    /// CPU seconds of earlier sessions; nil when a resumed checkpoint did not record them.
    var cpuBefore: Double? = 0
    var imagesSeen = 0
    var lastEval: EvalReport?
    let resumedFrom: Checkpoint.Contents?

    public struct Options {
        public var runDirectory: String
        public var threads: Int? = nil
        public var resume: Checkpoint.Contents? = nil
        public var initWeights: String? = nil
        /// Workers the run's gradients come from (0: this process), kept in checkpoints.
        public var workers: Int? = nil
        /// Where gradients come from (default: a replica in this process).
        public var source: ((_ plan: EpochPlan, _ train: ImageDataset, _ threads: Int) throws -> GradientSource)? = nil
        /// The run directory's lock, taken by the caller before it touched anything there
        /// (nil: `run` takes it).
        public var lock: RunDirectoryLock? = nil
        public init(runDirectory: String) { self.runDirectory = runDirectory }
    }

    public init(config: RunConfig, options: Options, logger: Logger) throws {
        try config.checkData()
        self.config = config
        self.log = logger
        runDirectory = options.runDirectory
        heldLock = options.lock
        workers = options.workers
        threads = options.threads ?? config.training.resolvedThreads
        train = try config.loadData(.train)
        test = try config.loadData(.test)
        let t = config.training
        plan = EpochPlan(datasetSize: train.count, batchSize: t.batchSize, seed: t.seed)
        (stepsPerEpoch, totalSteps) = config.stepCounts(trainCount: train.count)
        engine = Engine.configure(backend: config.compute.backend, precision: config.training.precision)
        // The summary is the progress display's first line (TrainingPlan.engine).
        Engine.log(engine, to: logger, summaryLevel: .debug)
        let model = ViTModel(config: config.model)
        let schedule = LRSchedule(config.schedule, base: config.optimizer.lr, totalSteps: totalSteps, stepsPerEpoch: stepsPerEpoch)
        server = ServerState(model: model, optimizer: config.optimizer, schedule: schedule)
        let d = config.data
        if let make = options.source {
            source = try make(plan, train, threads)
        } else {
            let replica = Replica(config: config, dataset: train, threads: threads, precision: engine.precision, log: logger)
            source = LocalGradientSource(replica: replica, plan: plan)
        }
        evaluator = Evaluator(model: model,
                              assembler: BatchAssembler(dataset: test, mean: d.mean, std: d.std, augmentation: .none, seed: t.seed, prefetch: d.prefetch),
                              batch: t.evalBatchSize, threads: threads, precision: engine.precision,
                              sparseKernels: config.compute.sparseKernels, log: logger)
        resumedFrom = options.resume
        server.enableSparsity(config.sparsity, seed: config.topologySeed)
        if source.compressesGradients || !config.communication.compresses {
            compression = try config.communication.schedule(optimizer: config.optimizer.kind, stepsPerEpoch: stepsPerEpoch,
                                                            lrWarmupSteps: schedule.warmupSteps)
            if let notice = compression.notice { log.warning("\(notice)") }
        } else {
            // No wire, nothing to compress: the run is the uncompressed one (a frozen
            // variance without top-k would only make it worse).
            compression = .uncompressed
            if let d = config.communication.gradientDensity {
                log.notice("communication.gradient_density \(d) applies to workers; this run computes its gradients in process (--workers 0) and sends every value")
            }
        }
        server.varianceFreezeStep = compression.activeFreezeStep
        if compression.tracksVariance(config.communication) {
            server.varianceTracker = VarianceTracker(tensors: model.layout.tensors.count, beta2: config.optimizer.beta2)
        }
        if let d = options.resume?.state.wireDecision { adopt(d) }
        if let c = options.resume {
            try Checkpoint.restore(c, into: server)
            elapsedBefore = c.state.elapsedSeconds
            cpuBefore = c.state.cpuSeconds
            imagesSeen = c.state.imagesSeen
            if let acc = c.state.lastEvalAccuracy, let loss = c.state.lastEvalLoss {
                lastEval = EvalReport(step: c.state.step, epoch: c.state.epoch, accuracy: acc, loss: loss, images: test.count, seconds: 0)
            }
            log.info("resuming at step \(c.state.step) of \(totalSteps) from \(c.file.path)")
        } else {
            Initializer.initialize(server.params, layout: model.layout, seed: StreamSeed.mix(t.seed, StreamSeed.initialization))
            if let path = options.initWeights {
                let file = try SafeTensorsFile(path: path)
                let ignored = try file.load(into: server.params, layout: model.layout, strict: true,
                                            ignoringPrefixes: Checkpoint.stateTensorPrefixes)
                log.info("initial weights from \(path)\(ignored.isEmpty ? "" : " (ignored \(ignored.count) optimizer/mask/selector tensors)")")
            }
            // The topology was drawn before the weights were set; zero the inactive ones again.
            server.masks?.apply(to: server.params)
        }
    }

    /// A resumed run that has already made every step.
    public var isFinished: Bool { server.step >= totalSteps }

    var checkpointDirectory: String { "\(runDirectory)/checkpoints" }
    public var metricsPath: String { "\(runDirectory)/metrics.jsonl" }

    /// Runs to the end (or until `stop` is raised), reporting through `observe`.
    public func run(stop: StopFlag = StopFlag(), observe: (TrainingEvent) -> Void = { _ in }) throws -> TrainingSummary {
        let fm = FileManager.default
        try fm.createDirectory(atPath: checkpointDirectory, withIntermediateDirectories: true)
        let ownLock = heldLock == nil ? try RunDirectoryLock(runDirectory) : nil
        defer { ownLock?.release() }
        // The pid goes into the lock file once training starts: a process that only finds
        // the run finished writes nothing in its directory.
        heldLock?.recordHolder()
        // Half-written files of a process that was killed mid-write (the lock says none runs).
        for dir in [runDirectory, checkpointDirectory] {
            for name in AtomicFile.removeLeftovers(in: dir) { log.info("removed \(dir)/\(name), left by a process killed while writing it") }
        }
        try AtomicFile.write("\(runDirectory)/config.yaml", data: Data(config.yaml.utf8))
        let metrics = try MetricsLog(path: metricsPath, keepThroughStep: resumedFrom?.state.step)
        defer { warnIfUnwritten(metrics) }
        source.attach(server: server)
        let t = config.training
        let startStep = server.step
        observe(.started(TrainingPlan(runDirectory: runDirectory, startStep: startStep, totalSteps: totalSteps,
                                      stepsPerEpoch: stepsPerEpoch, trainImages: train.count, testImages: test.count,
                                      parameters: server.model.layout.parameterCount, threads: threads, engine: engine.summary,
                                      wire: source.compressesGradients ? compression.summary(config.communication) : nil)))
        if startStep == 0 {
            var r = MetricsRecord(kind: .start, step: 0)
            r.run = config.name; r.totalSteps = totalSteps; r.stepsPerEpoch = stepsPerEpoch
            r.parameters = server.model.layout.parameterCount; r.threads = threads
            r.trainImages = train.count; r.testImages = test.count
            metrics.write(r)
        } else {
            metrics.write(MetricsRecord(kind: .resume, step: startStep))
        }

        // The run's clock: this session's seconds less its waits for workers.
        let session = MonotonicClock()
        let waitedAtStart = source.waitedSeconds
        func clock() -> Double { session.seconds - (source.waitedSeconds - waitedAtStart) }
        let cpu = ProcessCPUClock()
        var window = (loss: 0.0, correct: 0, images: 0, steps: 0, start: 0.0, up: 0, down: 0, workerSteps: 0, missing: 0)
        var wire = (up: 0, down: 0, workerSteps: 0)
        let denseFp32Bytes = 4 * server.model.layout.parameterCount
        var lastCheckpoint: String? = nil
        var secondsPerStep: Double? = nil
        var lastUpdate = ServerState.Update(step: startStep, lr: 0, gradNorm: 0, record: .skipped(step: startStep, optimizerUpdates: 0, varianceFrozen: false))
        var stopped = false
        var lastWorkerImages: [Int]?
        var skippedInARow = 0, skippedSteps = 0
        var meter = WireShareMeter()
        var timed = (rounds: 0, seconds: 0.0, wire: 0.0)

        while server.step < totalSteps {
            let step = server.step
            let epoch = step / stepsPerEpoch, inEpoch = step % stepsPerEpoch
            decideDensityIfDue(step: step, meter: meter, metrics: metrics)
            server.updateCodec = updateCodec(step: step)
            let work = StepWork(step: step, epoch: epoch, stepInEpoch: inEpoch, positions: plan.positions(step: inEpoch),
                                order: StepOrder(request: server.pendingPlan.request,
                                                 selector: config.selectorSchedule(step: step, total: totalSteps),
                                                 compression: compression.compression(step: step),
                                                 meanSquares: server.varianceTracker != nil, denseCodec: denseCodec(step: step)))
            var waited = false
            guard try source.waitUntilReady(stop: stop, waiting: { waited = true; observe(.waiting(connected: $0, needed: $1)) }) else {
                stopped = true
                break
            }
            if waited { observe(.ready) }
            guard let g = try source.gradient(params: server.params.pointer, work: work, stop: stop) else {
                stopped = true
                break
            }
            let result = g.result
            // A NaN or infinite loss or gradient (a diverged run) must not reach the weights
            // or a checkpoint: stop here, the last checkpoint on disk is a good one; or, when
            // the config says skip, count the step without an update, a few times in a row.
            if !result.lossSum.isFinite || !VectorOps.allFinite(g.gradient, server.params.count) {
                let what = result.lossSum.isFinite ? "the averaged gradient" : "the training loss"
                guard t.onNonFinite == .skip else {
                    throw stopNonFinite(metrics, step: step, what: what, lastCheckpoint: lastCheckpoint, elapsed: elapsedBefore + clock())
                }
                guard skippedInARow < t.maxSkippedSteps else {
                    throw stopNonFinite(metrics, step: step, what: "\(what) (after \(skippedInARow) skipped steps in a row, training.max_skipped_steps)",
                                        lastCheckpoint: lastCheckpoint, elapsed: elapsedBefore + clock())
                }
                skippedInARow += 1
                skippedSteps += 1
                let (skipped, topologyDue) = server.skip()
                source.applied(AppliedStep(step: step, report: nil, record: skipped), server: server)
                let reason = "\(what) is not finite (NaN or infinity): step \(step + 1) skipped, no update "
                    + "(\(skippedInARow) in a row of at most \(t.maxSkippedSteps), \(skippedSteps) in this session)"
                    + (topologyDue ? "; the topology update due at this step is left out" : "")
                log.warning("\(reason)")
                var record = MetricsRecord(kind: .skipped, step: server.step)
                record.reason = reason
                metrics.write(record)
            } else {
                skippedInARow = 0
                lastUpdate = server.apply(averagedGradient: g.gradient, replies: g.replies, meanSquares: g.meanSquares,
                                          estimate: work.order.compression.movesEstimate)
                if !VectorOps.allFinite(server.params.pointer, server.params.count) {
                    throw stopNonFinite(metrics, step: step, what: "the weights after the update", lastCheckpoint: lastCheckpoint,
                                        elapsed: elapsedBefore + clock())
                }
                source.applied(AppliedStep(step: step, report: lastUpdate, record: lastUpdate.record), server: server)
                imagesSeen += result.count
                window.loss += result.lossSum; window.correct += result.correct
                window.images += result.count; window.steps += 1
                window.up += g.bytesUp; window.down += g.bytesDown
                if g.bytesUp + g.bytesDown > 0 {
                    window.workerSteps += g.workers
                    wire.up += g.bytesUp; wire.down += g.bytesDown; wire.workerSteps += g.workers
                }
                lastWorkerImages = g.workerImages
                window.missing += g.missingImages
                if let r = g.timing {
                    if compression.undecided { meter.record(r) }
                    timed.rounds += 1; timed.seconds += r.roundSeconds; timed.wire += r.roundSeconds * r.wireShare
                }
            }

            let done = server.step
            observe(.advanced(step: done))
            let epochEnd = inEpoch == stepsPerEpoch - 1
            let last = done == totalSteps
            if window.steps > 0 && (window.steps >= t.logEverySteps || epochEnd || last || stop.isRaised) {
                let now = clock()
                let seconds = now - window.start
                let sps = seconds / Double(window.steps)
                secondsPerStep = secondsPerStep.map { 0.7 * $0 + 0.3 * sps } ?? sps
                var report = StepReport(step: done, totalSteps: totalSteps,
                                        epoch: Double(done) / Double(stepsPerEpoch),
                                        loss: window.loss / Double(window.images),
                                        trainAccuracy: Double(window.correct) / Double(window.images),
                                        lr: lastUpdate.lr, gradNorm: lastUpdate.gradNorm,
                                        imagesPerSecond: Double(window.images) / max(seconds, 1e-9),
                                        elapsedSeconds: elapsedBefore + now,
                                        etaSeconds: Double(totalSteps - done) * (secondsPerStep ?? 0),
                                        sparsity: sparsityReport)
                report.bytesUpPerStep = window.up / window.steps; report.bytesDownPerStep = window.down / window.steps
                if window.workerSteps > 0 {
                    report.bytesUpRatioToDenseFp32 = Double(window.up) / Double(window.workerSteps * denseFp32Bytes)
                    report.bytesDownRatioToDenseFp32 = Double(window.down) / Double(window.workerSteps * denseFp32Bytes)
                }
                report.imagesPerWorker = lastWorkerImages
                if window.missing > 0 { report.imagesMissing = window.missing }
                if let f = server.state.varianceScale, !f.isEmpty { report.varianceScale = Double(f.sorted()[f.count / 2]) }
                if timed.rounds > 0 {
                    report.wireShare = timed.wire / timed.seconds; report.roundSeconds = timed.seconds / Double(timed.rounds)
                    timed = (0, 0, 0)
                }
                let record = MetricsRecord(train: report)
                metrics.write(record)
                observe(.step(report))
                window = (0, 0, 0, 0, clock(), 0, 0, 0, 0)
            }

            for e in source.drainWorkerEvents() {
                var record = MetricsRecord(kind: .worker, step: done)
                record.time = e.time
                record.event = e.kind.rawValue; record.worker = e.worker; record.host = e.host; record.rank = e.rank; record.reason = e.reason
                metrics.write(record)
            }
            warnIfUnwritten(metrics)
            if stop.isRaised && !last { stopped = true }
            let evalNow = (epochEnd && t.evalEveryEpochs > 0 && (epoch + 1) % t.evalEveryEpochs == 0) || last
            if evalNow && !stopped {
                let report = evaluate(step: done, epoch: epochEnd ? epoch + 1 : epoch, observe: observe)
                var record = MetricsRecord(kind: .eval, step: report.step)
                record.epoch = Double(report.epoch); record.evalAccuracy = report.accuracy
                record.evalLoss = report.loss; record.evalSeconds = report.seconds
                // When this accuracy was known (its evaluation included), as the train
                // records' time and DDP's reference say it: time to accuracy reads it.
                record.elapsedSeconds = elapsedBefore + clock()
                metrics.write(record)
                window.start = clock()
            }
            let checkpointNow = last || stopped || (t.checkpointEverySteps > 0 ? done % t.checkpointEverySteps == 0 : epochEnd)
            if checkpointNow {
                lastCheckpoint = try writeCheckpoint(elapsed: elapsedBefore + clock(), cpu: cpuBefore.map { $0 + cpu.seconds })
                observe(.checkpointed(path: lastCheckpoint!, step: done))
                window.start = clock()
            }
            if stopped { break }
        }
        if stopped && lastCheckpoint.map({ !$0.hasSuffix(Checkpoint.fileName(step: server.step)) }) ?? true && server.step > 0 {
            lastCheckpoint = try writeCheckpoint(elapsed: elapsedBefore + clock(), cpu: cpuBefore.map { $0 + cpu.seconds })
            observe(.checkpointed(path: lastCheckpoint!, step: server.step))
        }
        source.finish(reason: stopped ? "stopped" : "done")
        let total = elapsedBefore + clock()
        var last = MetricsRecord(kind: stopped ? .stopped : .end, step: server.step)
        last.elapsedSeconds = total
        last.cpuSeconds = cpuBefore.map { $0 + cpu.seconds }
        let waited = source.waitedSeconds - waitedAtStart
        if waited >= 0.05 { last.waitedSeconds = (waited * 10).rounded() / 10 }
        metrics.write(last)
        return TrainingSummary(runDirectory: runDirectory, checkpoint: lastCheckpoint ?? (try? Checkpoint.locate(runDirectory)),
                               metrics: metricsPath, steps: server.step, stopped: stopped, lastEval: lastEval, elapsedSeconds: total,
                               waitedSeconds: waited, sparsity: sparsityReport,
                               wire: wire.workerSteps == 0 ? nil
                                   : WireTotals(upPerWorkerStep: Double(wire.up) / Double(wire.workerSteps),
                                                downPerWorkerStep: Double(wire.down) / Double(wire.workerSteps), denseFp32Bytes: denseFp32Bytes),
                               varianceScale: server.state.varianceScale,
                               untrainedWeights: server.masks.map { $0.untrainedCounts(server.params.pointer).reduce(0, +) },
                               activePrunableWeights: server.masks?.activePrunable)
    }

    /// Says once per episode that metrics.jsonl cannot be written (and when it can again).
    func warnIfUnwritten(_ metrics: MetricsLog) {
        if let e = metrics.lastError, !metricsWarned {
            metricsWarned = true
            log.warning("\(metrics.path): cannot write (\(e)); training goes on and the \(metrics.unwrittenCount) line(s) wait in memory until a write succeeds")
        } else if metrics.lastError == nil && metricsWarned {
            metricsWarned = false
            log.info("\(metrics.path): writable again; the waiting lines are written")
        }
    }

    /// The error that stops a diverged run, after a `stopped` metrics record saying why.
    func stopNonFinite(_ metrics: MetricsLog, step: Int, what: String, lastCheckpoint: String?, elapsed: Double) -> TrainingError {
        let kept = lastCheckpoint ?? (try? Checkpoint.locate(runDirectory))
        let message = "\(what) is not finite (NaN or infinity): the run diverged, and stops without applying or saving it. "
            + (kept.map { "The last good checkpoint is \($0); resume from it with a lower optimizer.lr or with optimizer.clip_grad_norm set." }
                ?? "No checkpoint was written yet; start again with a lower optimizer.lr or with optimizer.clip_grad_norm set.")
        var record = MetricsRecord(kind: .stopped, step: step)
        record.elapsedSeconds = elapsed
        record.reason = message
        metrics.write(record)
        source.finish(reason: "error: step \(step): \(what) is not finite")
        return TrainingError(step: step, message: message)
    }

    /// Density, active parameters, FLOPs saving and exploration of a sparse run.
    public var sparsityReport: SparsityReport? {
        server.masks.map { SparsityReport(masks: $0, model: server.model) }
    }

    /// Test-split accuracy and loss with the current parameters.
    public func evaluate(step: Int, epoch: Int, observe: (TrainingEvent) -> Void = { _ in }) -> EvalReport {
        let watch = MonotonicClock()
        let r = evaluator.evaluate(params: server.params.pointer, masks: server.masks) { done, total in observe(.evaluating(done: done, total: total)) }
        let report = EvalReport(step: step, epoch: epoch, accuracy: r.accuracy, loss: r.meanLoss, images: r.count, seconds: watch.seconds)
        lastEval = report
        observe(.evaluated(report))
        return report
    }

    func writeCheckpoint(elapsed: Double, cpu: Double?) throws -> String {
        let step = server.step
        var state = CheckpointState(runName: config.name, step: step, epoch: step / stepsPerEpoch,
                                    stepInEpoch: step % stepsPerEpoch, seed: config.training.seed,
                                    layoutHash: server.model.layout.hash, optimizer: config.optimizer.kind.rawValue,
                                    optimizerUpdates: server.optimizer.updates, imagesSeen: imagesSeen,
                                    elapsedSeconds: elapsed, lastEvalAccuracy: lastEval?.accuracy, lastEvalLoss: lastEval?.loss)
        state.cpuSeconds = cpu
        state.workers = workers
        state.wireDecision = wireDecision
        let path = "\(checkpointDirectory)/\(Checkpoint.fileName(step: step))"
        do {
            try Checkpoint.write(to: path, state: state, config: config, server: server)
        } catch let e as FileError where e.code == ENOSPC || e.code == EDQUOT {
            // The write is atomic: the half-written temporary is gone and the older
            // checkpoints are whole, so this run can go on from the newest once there is room.
            let kept = try? Checkpoint.locate(runDirectory)
            throw TrainingError(step: step, message: "\(e)\nThe disk is full: the checkpoint at step \(step) was not written. "
                + (kept.map { "The newest good checkpoint is \($0); free space and go on with `svite train --resume \(runDirectory)`." }
                    ?? "No checkpoint was written yet; free space and start again."))
        }
        Checkpoint.prune(in: checkpointDirectory, keep: config.training.keepCheckpoints, upTo: step)
        log.debug("checkpoint \(path)")
        return path
    }
}

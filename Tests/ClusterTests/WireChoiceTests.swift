import Compression
import Config
import Core
import Foundation
import Logging
import Steps
import Testing
import TestSupport
import Wire
import Worker
@testable import Coordinator
@testable import Training

/// `communication.gradient_density: auto`: the config, the schedule before and after the
/// decision, the meter, and runs whose answers are slow on the wire (it compresses) or
/// slow to compute (it does not), their checkpoints and a resume.
@Suite("gradient density auto", .serialized)
struct WireChoiceTests {
    let log = Logger(label: "test")

    @Test func autoIsTheDefaultAndReadsAndWritesByName() throws {
        #expect(CommunicationConfig().gradientDensity == nil && CommunicationConfig().compresses)
        let c = try tinyRunConfig(dataDir: "/d", extra: ["communication.gradient_density=auto"])
        #expect(c.communication.gradientDensity == nil && c.communication.targetDensity == CommunicationConfig.autoDensity)
        #expect(c.communication.replicatesUpdates, "auto may compress, so the downlink carries updates from the start")
        #expect(c.yaml.contains("gradient_density: auto"))
        #expect(try RunConfig.parse(yaml: c.yaml, file: "again.yaml").communication.gradientDensity == nil)
        #expect(try tinyRunConfig(dataDir: "/d", extra: ["communication.gradient_density=0.05"]).communication.gradientDensity == 0.05)
        for bad in ["0", "1.5", "often"] {
            do {
                _ = try tinyRunConfig(dataDir: "/d", extra: ["communication.gradient_density=\(bad)"])
                Issue.record("gradient_density \(bad) was taken")
            } catch let e as ConfigError {
                #expect(e.key == "communication.gradient_density" && "\(e)".contains("auto or a number"), "\(e)")
            }
        }
    }

    /// communication.dense_values: auto by default, a codec by name pins it (and an
    /// uncompressed run with int8 or bf16 values replays updates); anything else names the key.
    @Test func denseValuesReadByName() throws {
        #expect(CommunicationConfig().denseValues == nil)
        let c = try tinyRunConfig(dataDir: "/d", extra: ["communication.gradient_density=1", "communication.dense_values=int8"])
        #expect(c.communication.denseValues == .int8 && c.communication.replicatesUpdates && c.yaml.contains("dense_values: int8"))
        #expect(try RunConfig.parse(yaml: c.yaml, file: "again.yaml").communication.denseValues == .int8)
        #expect(try !tinyRunConfig(dataDir: "/d", extra: ["communication.gradient_density=1", "communication.dense_values=fp32"]).communication.replicatesUpdates)
        do {
            _ = try tinyRunConfig(dataDir: "/d", extra: ["communication.dense_values=int2"])
            Issue.record("dense_values int2 was taken")
        } catch let e as ConfigError {
            #expect(e.key == "communication.dense_values" && "\(e)".contains("auto, fp32, bf16, int8, int4"), "\(e)")
        }
    }

    /// Undecided, every step is uncompressed and nothing freezes; decided late, top-k and
    /// the freeze start at the decision's step; decided against, the run is uncompressed.
    @Test func theScheduleWaitsForTheDecision() throws {
        var c = CommunicationConfig()
        c.gradientDensity = nil
        let s = try c.schedule(optimizer: .adamw, stepsPerEpoch: 100, lrWarmupSteps: 50)
        #expect(s.undecided && s.denseSteps == 100 && s.freezeStep == 100 && s.activeFreezeStep == nil)
        #expect((0 ..< 400).allSatisfy { s.compression(step: $0) == .dense && !s.freezesVariance(step: $0) })
        #expect(s.tracksVariance(c), "the mean squares of the dense steps are the tracker's baseline")
        let yes = s.decided(compress: true, at: 104)
        #expect(!yes.undecided && yes.denseSteps == 104 && yes.freezeStep == 104 && yes.activeFreezeStep == 104)
        #expect(yes.compression(step: 103) == .dense && yes.density(step: 104) == 0.25 && yes.density(step: 400) == 0.01)
        #expect(s.decided(compress: false, at: 100) == .uncompressed)
        #expect(!CompressionSchedule.uncompressed.tracksVariance(c))
    }

    /// The median of the latest rounds decides: `needed` of them once the dense warm-up is
    /// over, `decisive` before it.
    @Test func theMeterDecidesOnTheMedianOfEnoughRounds() {
        var m = WireShareMeter()
        for _ in 0 ..< WireShareMeter.needed - 1 { m.record(RoundTiming(roundSeconds: 1, computeSeconds: 0.5)) }
        #expect(m.decision(step: 10, denseEnd: 10) == nil, "too few rounds")
        m.record(RoundTiming(roundSeconds: 10, computeSeconds: 0.1))  // one outlier does not decide
        #expect(m.decision(step: 10, denseEnd: 10) == WireDecision(step: 10, density: 1, codec: .int4, wireShare: 0.5, rounds: 8))
        #expect(m.decision(step: 8, denseEnd: 10) == nil, "before the warm-up's end it takes more rounds")
        for _ in m.shares.count ..< WireShareMeter.decisive { m.record(RoundTiming(roundSeconds: 1, computeSeconds: 0.5)) }
        #expect(m.decision(step: 8, denseEnd: 10)?.codec == .int4)
        #expect(m.decision(step: 8, denseEnd: 10, pinned: .bf16)?.codec == .bf16, "dense_values pins the codec")
        var slow = WireShareMeter()
        for _ in 0 ..< WireShareMeter.decisive { slow.record(RoundTiming(roundSeconds: 1, computeSeconds: 0.1)) }
        #expect(slow.decision(step: 16, denseEnd: 100)?.codec == .int4, "a wire of 90%: int4")
        var fast = WireShareMeter()
        for i in 0 ..< 100 { fast.record(RoundTiming(roundSeconds: 1, computeSeconds: i == 0 ? 0 : 0.9)) }
        #expect(fast.shares.count == WireShareMeter.kept)
        let d = fast.decision(step: 3, denseEnd: 100)
        #expect(d?.density == 1 && d?.codec == .fp32 && abs((d?.wireShare ?? 0) - 0.1) < 1e-9, "\(String(describing: d))")
        for (compute, codec) in [(0.75, ValueCodec.bf16), (0.65, .int8)] {
            var middling = WireShareMeter()
            for _ in 0 ..< WireShareMeter.decisive { middling.record(RoundTiming(roundSeconds: 1, computeSeconds: compute)) }
            let d = middling.decision(step: 16, denseEnd: 100)
            #expect(d?.density == 1 && d?.codec == codec, "a wire of \(Int(((1 - compute) * 100).rounded()))%: \(codec)")
        }
    }

    /// A decision goes into checkpoints with its codec; one from a checkpoint of 0.4 (bf16
    /// or not) still reads.
    @Test func aDecisionReadsFromOldAndNewCheckpoints() throws {
        let d = WireDecision(step: 3, density: 1, codec: .int8, wireShare: 0.3, rounds: 16)
        let text = String(decoding: try RecordCoding.encoder().encode(d), as: UTF8.self)
        #expect(text.contains("\"codec\":\"int8\""), "\(text)")
        #expect(try RecordCoding.decoder().decode(WireDecision.self, from: Data(text.utf8)) == d)
        for (half, codec) in [(true, ValueCodec.bf16), (false, .fp32)] {
            let old = #"{"density":0.01,"half_precision":\#(half),"rounds":16,"step":17,"wire_share":0.9}"#
            #expect(try RecordCoding.decoder().decode(WireDecision.self, from: Data(old.utf8))
                    == WireDecision(step: 17, density: 0.01, codec: codec, wireShare: 0.9, rounds: 16))
        }
    }

    func cluster(_ config: RunConfig, workers: Int) throws -> ClusterGradientSource {
        var o = ClusterOptions()
        o.bind = "tcp://127.0.0.1:*"
        o.statusBind = nil
        o.expectedWorkers = workers
        o.heartbeatSeconds = 0.3
        o.balance = .equal
        return try ClusterGradientSource(config: config, options: o, logger: log)
    }

    func worker(_ endpoint: String, name: String, hooks: WorkerTestHooks) -> Thread {
        let log = self.log
        let t = Thread {
            do {
                _ = try WorkerNode(options: WorkerOptions(coordinator: endpoint, name: name, threads: 1), logger: log, hooks: hooks).run()
            } catch {
                Issue.record("worker \(name): \(error)")
            }
        }
        t.start()
        return t
    }

    /// 30 steps of 16 images, 24 of them the dense warm-up, through two workers with `hooks`.
    func run(dir: String, hooks: WorkerTestHooks) throws -> (Trainer, [MetricsRecord], RunConfig) {
        try writeSyntheticIDX(dir: dir, train: 16 * 30, test: 16)
        let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=1", "training.batch_size=16", "training.checkpoint_every_steps=5", "training.keep_checkpoints=10",
                                                             "communication.gradient_density=auto", "communication.dense_warmup_epochs=0.8"])
        let source = try cluster(config, workers: 2)
        let threads = ["a", "b"].map { worker(source.endpoint, name: $0, hooks: hooks) }
        var options = Trainer.Options(runDirectory: "\(dir)/run")
        options.source = { _, _, _ in source }
        let trainer = try Trainer(config: config, options: options, logger: log)
        let summary = try trainer.run()
        while threads.contains(where: \.isExecuting) { Thread.sleep(forTimeInterval: 0.01) }
        #expect(summary.steps == 30)
        return (trainer, MetricsLog.read(summary.metrics), config)
    }

    /// Answers held back on the way (the wire) make auto decide once `decisive` rounds are
    /// measured: every value in int8 or int4 both ways from then on (as the share says), no
    /// top-k (the coordinator's rounding kept in its checkpoints); the checkpoints keep the decision and a resumed
    /// trainer follows it. A top-k decision an older checkpoint holds still runs as it said.
    @Test func aSlowWireSendsNarrowerValues() throws {
        try withTemporaryDirectory { dir in
            var hooks = WorkerTestHooks()
            hooks.answerDelay = 0.1  // well above a loaded machine's compute for this model
            let (trainer, records, config) = try run(dir: dir, hooks: hooks)
            let decisions = records.filter { $0.kind == .wire }
            let at = decisions.first?.step ?? -1
            #expect(decisions.count == 1 && (16 ... 20).contains(at) && decisions.first?.gradientDensity == 1,
                    "\(decisions.map { ($0.step, $0.gradientDensity, $0.reason) })")
            #expect((decisions.first?.wireShare ?? 0) >= CommunicationConfig.autoInt8Share)
            let d = try #require(trainer.wireDecision)
            let codec: ValueCodec = d.wireShare >= CommunicationConfig.autoInt4Share ? .int4 : .int8
            #expect(d.step == at && d.density == 1 && d.codec == codec && trainer.compression == .uncompressed)
            #expect(trainer.server.updateCodec == codec && trainer.server.updateResidual != nil)
            #expect(trainer.denseCodec(step: at - 1) == nil && trainer.denseCodec(step: at) == codec && trainer.updateCodec(step: 29) == codec)
            #expect(trainer.server.varianceTracker == nil && !trainer.server.optimizer.varianceFrozen, "every value: nothing frozen")
            // Records are per step (log_every_steps 1): fp32 before the decision, int4 or int8
            // both ways after it: an eighth or a quarter of the bytes and an exponent byte a block.
            let train = records.filter { $0.kind == .train }
            func ratios(_ steps: ClosedRange<Int>, _ up: Bool) -> [Double] {
                train.filter { steps.contains($0.step) }.compactMap { up ? $0.bytesUpRatioToDenseFp32 : $0.bytesDownRatioToDenseFp32 }
            }
            #expect(ratios(3 ... at, true).allSatisfy { $0 > 0.9 } && ratios(3 ... at, false).allSatisfy { $0 > 0.9 }, "\(ratios(3 ... at, true))")
            // (A step frame carries the update of the step before: the first narrow one comes a step later.)
            let up = ratios(at + 1 ... 30, true), down = ratios(at + 2 ... 30, false)
            let range = codec == .int4 ? 0.1 ... 0.2 : 0.2 ... 0.35
            #expect(!up.isEmpty && up.allSatisfy { range.contains($0) }, "\(codec) up: \(up)")
            #expect(!down.isEmpty && down.allSatisfy { $0 >= range.lowerBound && $0 < range.upperBound + 0.05 }, "\(codec) down: \(down)")
            #expect(train.contains { ($0.wireShare ?? 0) > 0.2 && ($0.roundSeconds ?? 0) > 0.05 }, "the profile is in the metrics")

            let checkpoint = try Checkpoint.read("\(dir)/run/checkpoints/\(Checkpoint.fileName(step: 25))")
            #expect(checkpoint.state.wireDecision == d)
            #expect(try Checkpoint.read("\(dir)/run/checkpoints/\(Checkpoint.fileName(step: 15))").state.wireDecision == nil)
            // A narrow step's checkpoint keeps what the coordinator rounded off, and a resume takes it.
            let residualNames = checkpoint.file.entries.keys.filter { $0.hasPrefix(Checkpoint.updateResidualPrefix) }
            #expect(residualNames.count == trainer.server.model.layout.tensors.count)
            var options = Trainer.Options(runDirectory: "\(dir)/resumed")
            options.resume = checkpoint
            let source = try cluster(config, workers: 2)
            options.source = { _, _, _ in source }
            let resumed = try Trainer(config: config, options: options, logger: log)
            #expect(resumed.wireDecision == d && !resumed.compression.undecided && resumed.updateCodec(step: 26) == codec)
            let kept = try #require(resumed.server.updateResidual)
            #expect((0 ..< kept.count).contains { kept.pointer[$0] != 0 }, "the residual came back")
            source.finish(reason: "test over")

            // A checkpoint of 0.4 whose auto took top-k: int8 until the dense warm-up's end,
            // then top-k with bf16 updates, the variance frozen from there.
            var fresh = Trainer.Options(runDirectory: "\(dir)/old")
            let other = try cluster(config, workers: 2)
            fresh.source = { _, _, _ in other }
            let old = try Trainer(config: config, options: fresh, logger: log)
            #expect(old.compression.undecided && old.denseCodec(step: 3) == nil)
            old.adopt(WireDecision(step: 17, density: 0.01, codec: .int8, wireShare: 0.9, rounds: 16))
            #expect(old.compression.denseSteps == 24 && old.compression.density(step: 29) != nil && old.compression.density(step: 20) == nil)
            #expect(old.denseCodec(step: 20) == .int8 && old.updateCodec(step: 20) == .int8 && old.denseCodec(step: 29) == nil && old.updateCodec(step: 29) == .bf16)
            #expect(old.server.varianceFreezeStep == 24)
            other.finish(reason: "test over")
        }
    }

    /// Workers slow to compute (the wire a small share) keep every value in fp32 for the
    /// whole run, and the variance is neither frozen nor tracked.
    @Test func slowComputeKeepsEveryValue() throws {
        try withTemporaryDirectory { dir in
            var hooks = WorkerTestHooks()
            hooks.computeDelay = (0.15, 0)
            let (trainer, records, _) = try run(dir: dir, hooks: hooks)
            let decisions = records.filter { $0.kind == .wire }
            #expect(decisions.count == 1 && decisions.first?.gradientDensity == 1, "\(decisions.map { ($0.step, $0.gradientDensity, $0.reason) })")
            #expect(trainer.compression == .uncompressed && trainer.server.varianceTracker == nil && !trainer.server.optimizer.varianceFrozen)
            #expect(trainer.wireDecision?.codec == .fp32 && trainer.server.updateCodec == .fp32 && trainer.server.updateResidual == nil)
            let ratios = records.filter { $0.kind == .train }.compactMap(\.bytesUpRatioToDenseFp32)
            #expect(!ratios.isEmpty && ratios.allSatisfy { $0 > 0.9 }, "\(ratios)")
        }
    }
}

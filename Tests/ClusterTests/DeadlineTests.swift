import Config
import Core
import Foundation
import Logging
import Synchronization
import Testing
import TestSupport
import Transport
import Wire
import Worker
@testable import Coordinator
@testable import Training

/// Step deadlines: the rules alone, then a run with a peer that never answers, a step
/// frame lost on the way and a worker whose compute is made slow.
@Suite("step deadlines", .serialized)
struct DeadlineTests {
    let log = Logger(label: "test")

    /// The deadline follows the worker's measured speed within the floor and the
    /// ceiling; a worker not yet measured is judged by the round's answers, and with none
    /// has the ceiling.
    @Test func deadlineFollowsMeasuredSpeed() {
        var p = DeadlinePolicy()
        p.floorSeconds = 2; p.ceilingSeconds = 60; p.factor = 4
        #expect(StepDeadline.seconds(share: 64, throughput: 64, roundRate: nil, policy: p) == 4)
        #expect(StepDeadline.seconds(share: 64, throughput: 640, roundRate: nil, policy: p) == 2, "the floor")
        #expect(StepDeadline.seconds(share: 64, throughput: 1, roundRate: nil, policy: p) == 60, "the ceiling")
        #expect(StepDeadline.seconds(share: 64, throughput: nil, roundRate: 16, policy: p) == 16, "judged by the round")
        #expect(StepDeadline.seconds(share: 64, throughput: nil, roundRate: nil, policy: p) == 60)
        #expect(StepDeadline.seconds(share: 64, throughput: .nan, roundRate: 32, policy: p) == 8, "a NaN speed is no speed")
        // Two answers of 32 images, the slower in 0.5 s: 64 images a second per worker.
        #expect(StepDeadline.roundRate(answers: [(32, 0.25), (32, 0.5)]) == 64)
        #expect(StepDeadline.roundRate(answers: []) == nil)
        // Against the others: once half the round has answered, factor times the slowest.
        #expect(StepDeadline.stragglerSeconds(answers: [(32, 0.25), (32, 1.5)], members: 4, policy: p) == 6)
        #expect(StepDeadline.stragglerSeconds(answers: [(32, 0.1)], members: 2, policy: p) == 2, "the floor")
        #expect(StepDeadline.stragglerSeconds(answers: [(32, 0.1)], members: 3, policy: p) == nil, "fewer than half answered")
        #expect(StepDeadline.stragglerSeconds(answers: [], members: 1, policy: p) == nil)
    }

    /// Misses in a row bench a worker, each failed try doubles the bench up to the
    /// longest, an answer in time restores it; one that never answered is dropped after
    /// its first failed try.
    @Test func missesBenchThenDropAWorkerThatNeverAnswers() {
        var p = DeadlinePolicy()
        p.missesToBench = 3; p.firstBenchSeconds = 30; p.longestBenchSeconds = 100; p.triesBeforeDrop = 1
        var r = DeadlineRecord()
        r.answered(at: 0)
        #expect(r.missed(images: 8, at: 1, policy: p) == .late)
        #expect(r.standing(at: 1) == .late && r.takesPart(at: 1))
        #expect(r.missed(images: 8, at: 2, policy: p) == .late)
        #expect(r.missed(images: 8, at: 3, policy: p) == .benched(until: 33))
        #expect(!r.takesPart(at: 32) && r.standing(at: 32) == .stuck && r.takesPart(at: 33))
        #expect(r.missed(images: 8, at: 34, policy: p) == .benched(until: 94), "a failed try doubles the bench")
        #expect(r.missed(images: 8, at: 95, policy: p) == .benched(until: 195), "up to the longest")
        #expect(r.missedSteps == 5 && r.missedImages == 40)
        r.answered(at: 200)
        #expect(r.standing(at: 200) == .ready && r.missesInARow == 0)
        #expect(r.missed(images: 8, at: 201, policy: p) == .late, "good standing again")

        var never = DeadlineRecord()
        for t in 0 ..< 3 { _ = never.missed(images: 4, at: Double(t), policy: p) }
        #expect(!never.takesPart(at: 10))
        #expect(never.missed(images: 4, at: 40, policy: p) == .dropped)
    }

    func cluster(_ config: RunConfig, workers: Int, drop: (String, Int)? = nil, garble: Bool = false, status: Bool = false) throws -> ClusterGradientSource {
        var o = ClusterOptions()
        o.bind = "tcp://127.0.0.1:*"
        o.statusBind = status ? "tcp://127.0.0.1:*" : nil
        o.expectedWorkers = workers
        o.heartbeatSeconds = 0.3
        o.balance = .equal
        var hooks = CoordinatorTestHooks()
        hooks.dropStepFrame = drop
        hooks.garbleStepFrame = garble
        return try ClusterGradientSource(config: config, options: o, logger: log, hooks: hooks)
    }

    func worker(_ endpoint: String, name: String, delay: (Double, Int)? = nil) -> Thread {
        let log = self.log
        let t = Thread {
            do {
                var hooks = WorkerTestHooks()
                hooks.computeDelay = delay
                _ = try WorkerNode(options: WorkerOptions(coordinator: endpoint, name: name, threads: 1), logger: log, hooks: hooks).run()
            } catch {
                Issue.record("worker \(name): \(error)")
            }
        }
        t.start()
        return t
    }

    func run(_ config: RunConfig, dir: String, source: ClusterGradientSource) throws -> (TrainingSummary, [MetricsRecord]) {
        var options = Trainer.Options(runDirectory: dir)
        options.source = { _, _, _ in source }
        let summary = try Trainer(config: config, options: options, logger: log).run()
        return (summary, MetricsLog.read(summary.metrics))
    }

    /// A peer that joins and then only heartbeats (before: every step waited for it,
    /// forever) misses three steps' deadlines, is benched and named, and the honest worker
    /// carries the rest of the run; the images it held back are in the metrics.
    @Test func aPeerThatOnlyHeartbeatsIsBenchedAndTheRunGoesOn() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 16 * 10, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=10", "training.batch_size=16",
                                                                 "communication.step_deadline_floor_seconds=1"])
            let source = try cluster(config, workers: 2)
            let peer = HeartbeatOnlyPeer(name: "mute", endpoint: source.endpoint, layoutHash: source.layout.hash)
            peer.start()
            let honest = worker(source.endpoint, name: "honest")
            let (summary, records) = try run(config, dir: "\(dir)/run", source: source)
            // What the status socket would answer now (the run's end closed it).
            let doc = StatusServer.document(run: nil, runID: source.runID, endpoint: source.endpoint, badFrames: 0,
                                            workers: locked(source) { $0.service.membership.all }, now: source.service.clock.seconds)
            peer.stop()
            while honest.isExecuting || peer.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
            #expect(summary.steps == 10)
            let missing = records.filter { $0.kind == .train }.compactMap(\.imagesMissing).reduce(0, +)
            #expect(missing >= 3 * 8, "images left out: \(missing)")
            let benched = records.filter { $0.kind == .worker && $0.event == "benched" }
            #expect(benched.map(\.worker) == ["mute"], "\(benched.map(\.worker))")
            let mute = try #require(doc.workers?.first { $0.id == "mute" })
            #expect(mute.state == .stuck && mute.secondsSinceAnswer == nil && (mute.missedSteps ?? 0) >= 3, "\(mute)")
            let good = try #require(doc.workers?.first { $0.id == "honest" })
            #expect(good.state.takesPart, "\(good)")
            // After the bench, the honest worker's gradient is the whole step.
            let last = records.last { $0.kind == .train }
            #expect(last?.imagesPerWorker == [16] && last?.imagesMissing == nil, "\(String(describing: last?.imagesPerWorker))")
        }
    }

    /// A step frame lost on the way (the worker never sees the step) ends the step at its
    /// deadline, with that worker's images counted as missing in that step's record only;
    /// the worker takes part in the next step as before.
    @Test func aLostStepFrameEndsTheStepAtItsDeadline() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 16 * 6, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=6", "training.batch_size=16",
                                                                 "communication.step_deadline_floor_seconds=1"])
            let source = try cluster(config, workers: 2, drop: ("b", 3))
            let threads = [worker(source.endpoint, name: "a"), worker(source.endpoint, name: "b")]
            let (summary, records) = try run(config, dir: "\(dir)/run", source: source)
            while threads.contains(where: \.isExecuting) { Thread.sleep(forTimeInterval: 0.01) }
            #expect(summary.steps == 6)
            let train = records.filter { $0.kind == .train }
            #expect(train.map(\.step) == [1, 2, 3, 4, 5, 6])
            for r in train {
                // A loaded machine may make another step late too; step 4 must be.
                if r.step == 4 { #expect(r.imagesMissing == 8 && r.imagesPerWorker == [8, 0], "step 4: \(String(describing: r.imagesPerWorker))") }
            }
            let b = try #require(source.workers.values.first { $0.name == "b" })
            #expect(b.deadline.missedSteps >= 1 && b.deadline.takesPart(at: .infinity) && b.state == .ready)
            #expect(records.filter { $0.kind == .worker && $0.event == "benched" }.isEmpty)
        }
    }

    /// A step frame whose payload is noise under a valid checksum (before: the worker
    /// ended with "an update for a worker that holds no replica of the optimizer") is
    /// logged, the worker asks for the whole state again and answers the next steps.
    @Test func aGarbledStepFrameIsSurvived() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 16 * 6, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=6", "training.batch_size=16",
                                                                 "communication.step_deadline_floor_seconds=1"])
            let source = try cluster(config, workers: 2, drop: ("b", 2), garble: true)
            let threads = [worker(source.endpoint, name: "a"), worker(source.endpoint, name: "b")]
            let (summary, records) = try run(config, dir: "\(dir)/run", source: source)
            while threads.contains(where: \.isExecuting) { Thread.sleep(forTimeInterval: 0.01) }
            #expect(summary.steps == 6)
            let b = try #require(source.workers.values.first { $0.name == "b" })
            #expect(b.state == .ready && b.joins == 2 && b.stepsDone >= 4, "b: \(b.state) joins \(b.joins) steps \(b.stepsDone)")
            #expect(records.first { $0.kind == .train && $0.step == 3 }?.imagesMissing == 8)
        }
    }

    /// Every step frame a worker gets is noise under a valid checksum: each is counted and
    /// answered with a resync, and the worker runs to the end of the run and leaves when
    /// told (before: after three it stopped with "cannot be used after 3 resyncs").
    @Test func aWorkerSentOnlyMalformedStepFramesKeepsRunning() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 16 * 6, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=6", "training.batch_size=16",
                                                                 "communication.step_deadline_floor_seconds=1",
                                                                 "communication.missed_steps_to_bench=1000"])
            var o = ClusterOptions()
            o.bind = "tcp://127.0.0.1:*"; o.statusBind = nil; o.expectedWorkers = 2; o.heartbeatSeconds = 0.3; o.balance = .equal
            var hooks = CoordinatorTestHooks()
            hooks.garbleEveryStepFrameTo = "b"
            let source = try ClusterGradientSource(config: config, options: o, logger: log, hooks: hooks)
            let a = worker(source.endpoint, name: "a")
            let b = try WorkerNode(options: WorkerOptions(coordinator: source.endpoint, name: "b", threads: 1), logger: log)
            let outcome = Mutex<Result<String, any Error>?>(nil)
            let tb = Thread { let r = Result { try b.run() }; outcome.withLock { $0 = r } }
            tb.start()
            let (summary, _) = try run(config, dir: "\(dir)/run", source: source)
            while a.isExecuting || tb.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
            #expect(summary.steps == 6)
            #expect(b.badFrames >= 5 && b.stepsDone == 0, "bad frames \(b.badFrames), steps \(b.stepsDone)")
            let reason = try #require(outcome.withLock { $0 }).get()
            #expect(reason == "done", "the worker ended with \(reason)")
        }
    }

    /// One of two workers made slow from its third step (2 s a step against a 1 s floor):
    /// three misses bench it and the healthy worker carries the batch (before: every step
    /// took the slow one's time). Each step is applied once; the missing images are recorded.
    @Test func aStragglerIsBenchedAndDoesNotPaceTheRun() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 16 * 14, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=14", "training.batch_size=16",
                                                                 "communication.step_deadline_floor_seconds=1"])
            let source = try cluster(config, workers: 2)
            let threads = [worker(source.endpoint, name: "fast"), worker(source.endpoint, name: "slow", delay: (2.5, 2))]
            let (summary, records) = try run(config, dir: "\(dir)/run", source: source)
            while threads.contains(where: \.isExecuting) { Thread.sleep(forTimeInterval: 0.01) }
            #expect(summary.steps == 14)
            let benched = records.filter { $0.kind == .worker && $0.event == "benched" }
            #expect(benched.map(\.worker) == ["slow"])
            let slow = try #require(source.workers.values.first { $0.name == "slow" })
            #expect(slow.deadline.missedSteps == 3 && slow.stepsDone == 2, "missed \(slow.deadline.missedSteps), answered \(slow.stepsDone)")
            let train = records.filter { $0.kind == .train }
            #expect(train.compactMap(\.imagesMissing).reduce(0, +) == 3 * 8)
            #expect(train.last?.imagesPerWorker == [16])
        }
    }
}

/// A peer that joins and then only heartbeats: it never answers a step.
final class HeartbeatOnlyPeer: @unchecked Sendable {
    let name: String, endpoint: String, layoutHash: UInt64
    private let flag = StopFlag()
    private var thread: Thread?
    var isExecuting: Bool { thread?.isExecuting ?? false }

    init(name: String, endpoint: String, layoutHash: UInt64) {
        self.name = name; self.endpoint = endpoint; self.layoutHash = layoutHash
    }

    func start() {
        let t = Thread { [self] in
            do {
                let ctx = try ZMQContext()
                let s = try ZMQSocket.workerDealer(ctx, identity: name, maxMessageBytes: -1, heartbeatMs: 500)
                defer { s.close() }
                try s.connect(endpoint)
                _ = try s.send([Frame(header: FrameHeader(type: .join, runID: 0, layoutHash: layoutHash),
                                      payload: Payload.encodeJSON(JoinMessage(name: name, host: "test", pid: 1, threads: 1))).encoded()])
                var runID: UInt64 = 0
                while !flag.isRaised {
                    if try Poller.readable([s], timeoutMs: 200)[0], let parts = try s.receive(), let h = Frame.peek(parts[0]) {
                        if h.type == .stop || h.type == .reject { return }
                        runID = h.runID
                    }
                    if runID != 0 {
                        _ = try s.send([Frame(header: FrameHeader(type: .heartbeat, runID: runID, layoutHash: layoutHash), payload: []).encoded()])
                    }
                }
            } catch {
                Issue.record("peer \(name): \(error)")
            }
        }
        thread = t
        t.start()
    }

    func stop() { flag.raise() }
}

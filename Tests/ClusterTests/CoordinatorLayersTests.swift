import Core
import Foundation
import Kernels
import Logging
import Model
import Sparsity
import Testing
import TestSupport
import Transport
import Wire
import Worker
@testable import Coordinator
@testable import Training

/// The coordinator's layers on their own: the aggregator without sockets, membership, and
/// the socket thread that keeps answering while the trainer is busy elsewhere.
@Suite("coordinator layers", .serialized)
struct CoordinatorLayersTests {
    let log = Logger(label: "test")

    func grads(_ values: [Float], images: UInt32, loss: Double, correct: UInt32, reply: StepReply = .none) -> [UInt8] {
        values.withUnsafeBufferPointer {
            Payload.grads(GradientSummary(images: images, lossSum: loss, correct: correct), codec: .fp32,
                          values: $0.baseAddress!, count: values.count, reply: reply)
        }
    }

    /// Two workers' packed gradients become the image-weighted mean in layout order (zero
    /// at pruned weights), their grow candidates the weighted mean at the named weights;
    /// a truncated payload or a reply that was not asked for adds nothing.
    @Test func aggregatorMergesRepliesInPackedSpace() throws {
        let config = try tinyRunConfig(dataDir: "/nonexistent", extra: ["sparsity.method=svite", "sparsity.sparsity=0.5"])
        let layout = ViTModel(config: config.model).layout
        let masks = MaskSet(for: config.sparsity, layout: layout)
        let n = masks.packedCount
        #expect(n < layout.count)
        let a = (0 ..< n).map { Float($0 % 7) - 3 }, b = (0 ..< n).map { Float($0 % 5) * 0.5 }
        let layers = masks.prunable.count
        let candA = (0 ..< layers).map { l in GrowCandidates(indices: l == 0 ? [0] : [], values: l == 0 ? [4] : []) }
        let candB = (0 ..< layers).map { l in GrowCandidates(indices: l == 0 ? [0] : [], values: l == 0 ? [-2] : []) }
        let aggregator = GradientAggregator(layout: layout, model: config.model)
        aggregator.begin(request: .growCandidates(multiplier: 1, perLayer: Array(repeating: 1, count: layers)), masks: masks)
        #expect(aggregator.finish(bytesUp: 0, bytesDown: 0, workers: 0) == nil, "no images, no gradient")

        try aggregator.add(payload: grads(a, images: 16, loss: 32, correct: 4, reply: .growCandidates(candA)))
        let good = grads(b, images: 48, loss: 48, correct: 40, reply: .growCandidates(candB))
        #expect(throws: WireError.self) { try aggregator.add(payload: Array(good.dropLast(3))) }
        #expect(throws: WireError.self) { try aggregator.add(payload: grads(b, images: 48, loss: 48, correct: 40, reply: .unitScores([1]))) }
        #expect(throws: WireError.self) { try aggregator.add(payload: grads(Array(b.dropLast()), images: 48, loss: 48, correct: 40)) }
        #expect(aggregator.images == 16)
        try aggregator.add(payload: good)

        let g = try #require(aggregator.finish(bytesUp: 10, bytesDown: 20, workers: 2))
        #expect(g.result.count == 64 && g.result.correct == 44 && g.result.lossSum == 80)
        #expect(g.bytesUp == 10 && g.bytesDown == 20 && g.workers == 2)
        let expected = FloatBuffer(count: n)
        for i in 0 ..< n { expected[i] = (16 * a[i] + 48 * b[i]) * (1 / Float(64)) }
        let full = FloatBuffer(count: layout.count)
        masks.unpack(expected.pointer, into: full.pointer)
        var mismatches = 0, activeNonZero = 0
        for i in 0 ..< layout.count {
            if g.gradient[i] != full[i] { mismatches += 1 }
            if masks.mask[i] == 0 && g.gradient[i] != 0 { activeNonZero += 1 }
        }
        #expect(mismatches == 0 && activeNonZero == 0)
        let score = try #require(g.replies.growScore)
        let first = masks.prunable[0].offset
        #expect(score[first] == (16 * 4 + 48 * -2) * (1 / Float(64)))
        #expect(score[first + 1] == 0)
    }

    /// A join gets the next rank; the same connection again keeps it and starts afresh;
    /// another connection under a live worker's name is refused, under a silent or gone
    /// one's it takes over the rank; silence beyond the timeout is noticed.
    @Test func membershipRanksAndLiveness() throws {
        let m = Membership()
        func admit(_ id: UInt8, _ name: String, pid: Int32, at now: Double) -> (WorkerRecord?, Bool, String?) {
            switch m.admit([id], join: JoinMessage(name: name, host: "h", pid: pid, threads: 1), now: now, aliveWithin: 1) {
            case let .admitted(r, fresh): return (r, fresh, nil)
            case let .refused(why): return (nil, false, why)
            }
        }
        let (a, newA, _) = admit(1, "a", pid: 1, at: 0), (b, newB, _) = admit(2, "b", pid: 2, at: 1)
        #expect(newA && newB && a?.rank == 0 && b?.rank == 1)
        a?.version = 5; a?.maskVersion = 3; a?.state = .lost
        #expect(m.live.map(\.name) == ["b"])
        let (again, newAgain, _) = admit(1, "a", pid: 1, at: 2)
        #expect(!newAgain && again === a && a?.joins == 2 && a?.rank == 0 && a?.state == .ready && a?.version == -1 && a?.maskVersion == -1)
        #expect(m.live.map(\.name) == ["a", "b"])
        // A second process named "b" while b is alive (heard 0.5 s ago): refused.
        let (dup, _, why) = admit(3, "b", pid: 3, at: 1.5)
        #expect(dup == nil && why?.contains("in use by a live worker") == true)
        // b restarted (silent for 3 s): the new process takes b's rank, the old record is left.
        let (restarted, fresh, _) = admit(4, "b", pid: 4, at: 4)
        #expect(fresh && restarted?.rank == 1 && b?.state == .left && m.live.map(\.rank) == [0, 1])
        #expect(m.silent(now: 8, timeout: 5).map(\.name) == ["a"])
    }

    /// While the trainer evaluates 10,000 test images the socket thread keeps serving:
    /// the status socket answers with state "evaluating", and the worker hears the
    /// coordinator (it never asks to join again).
    @Test func statusAnswersDuringEvaluation() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 64, test: 10_000)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=2", "training.eval_batch_size=250"])
            var o = ClusterOptions()
            o.bind = "tcp://127.0.0.1:*"
            o.statusBind = "tcp://127.0.0.1:*"
            o.heartbeatSeconds = 0.2
            o.workerTimeout = 1
            let source = try ClusterGradientSource(config: config, options: o, logger: log)
            let status = RunStatus(config: config, parameters: 1)
            source.runStatus = status
            let endpoint = source.endpoint, statusEndpoint = source.statusEndpoint!
            let worker = Thread {
                do {
                    var wo = WorkerOptions(coordinator: endpoint, name: "w", threads: 1)
                    wo.rejoinAfter = 0.8  // shorter than the evaluation: a silent coordinator would show
                    _ = try WorkerNode(options: wo, logger: Logger(label: "worker")).run()
                } catch {
                    Issue.record("worker: \(error)")
                }
            }
            worker.start()
            let answers = StateLog()
            let poller = Thread {
                while !answers.done {
                    if let doc = try? queryStatus(statusEndpoint, timeoutMs: 500), let state = doc.state {
                        answers.add(state.rawValue)
                    }
                    Thread.sleep(forTimeInterval: 0.05)
                }
            }
            var options = Trainer.Options(runDirectory: "\(dir)/run")
            options.source = { _, _, _ in source }
            let trainer = try Trainer(config: config, options: options, logger: log)
            var evaluatingSeen = false
            poller.start()
            _ = try trainer.run { event in
                status.observe(event)
                if case .evaluating = event, !evaluatingSeen {
                    evaluatingSeen = true
                    // Hold the evaluation until the poller has had an answer during it.
                    let deadline = Date().addingTimeInterval(10)
                    while !answers.states.contains("evaluating") && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
                    Thread.sleep(forTimeInterval: 1.2)  // longer than the worker's rejoin limit
                }
            }
            answers.done = true
            while poller.isExecuting || worker.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
            #expect(evaluatingSeen)
            #expect(answers.states.contains("evaluating"), "status answers: \(answers.states)")
            let w = try #require(source.workers.values.first)
            #expect(source.workers.count == 1 && w.stepsDone == 2 && w.state == .ready)
            #expect(source.badFrameTotal == 0)
            #expect(w.joins == 1, "the worker asked to join \(w.joins) times")
        }
    }
}

extension CoordinatorLayersTests {
    /// Equal shares stay equal for equal speeds and within the hysteresis; a 3× faster
    /// worker gets about three quarters at the next re-balance step and not before; a
    /// newcomer starts at the mean weight; equal mode ignores speeds.
    @Test func balancerSharesFollowThroughput() {
        var b = BatchBalancer(mode: .throughput)
        #expect(b.shares(step: 0, members: [(0, nil), (1, nil)]) == [500, 500])
        #expect(b.shares(step: 20, members: [(0, 100), (1, 70)]) == [500, 500], "within the hysteresis (a 41/59 split)")
        #expect(b.shares(step: 21, members: [(0, 300), (1, 100)]) == [500, 500], "not a re-balance step")
        #expect(b.shares(step: 40, members: [(0, 300), (1, 100)]) == [750, 250])
        #expect(b.shares(step: 41, members: [(0, 300), (1, 100), (2, nil)]) == [750, 250, 500])
        #expect(b.shares(step: 60, members: [(0, 300), (2, nil)]) == [500, 500], "the unmeasured one counts as the mean")
        var e = BatchBalancer(mode: .equal)
        #expect(e.shares(step: 20, members: [(0, 300), (1, 100)]) == [500, 500])
        #expect(BatchBalancer.proportional([nil, nil]) == nil)
        #expect(BatchBalancer.proportional([.nan, 2]) == [500, 500])
    }

    /// A worker that takes 0.15 s a step beside a fast one gets a smaller share from the
    /// first re-balance (step 20) on; every step is applied once and the shares go to the metrics.
    @Test func slowWorkerGetsASmallerShare() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 32 * 26, test: 16)
            // The balancer alone: a busy machine must not make a step late and change a split.
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=26", "training.batch_size=32"] + noStepDeadlines)
            var o = ClusterOptions()
            o.bind = "tcp://127.0.0.1:*"
            o.statusBind = nil
            o.expectedWorkers = 2
            o.heartbeatSeconds = 0.5
            let source = try ClusterGradientSource(config: config, options: o, logger: log)
            let endpoint = source.endpoint, count = source.layout.count, layoutHash = source.layout.hash
            // Two workers that answer with zero gradients, one at once and one after 0.15 s, so
            // their speeds differ by far more than any load on the machine could.
            let assigned = StateLog()
            let slow = fakeWorker("slow", endpoint: endpoint, count: count, layoutHash: layoutHash, delay: 0.15) { step, images in
                assigned.add("\(step):\(images)")
            }
            let fast = fakeWorker("fast", endpoint: endpoint, count: count, layoutHash: layoutHash, delay: 0)
            slow.start()
            fast.start()
            var options = Trainer.Options(runDirectory: "\(dir)/run")
            options.source = { _, _, _ in source }
            let trainer = try Trainer(config: config, options: options, logger: log)
            let summary = try trainer.run()
            while slow.isExecuting || fast.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
            #expect(summary.steps == 26 && trainer.server.optimizer.updates == 26)
            let byStep = Dictionary(assigned.states.map { s -> (Int, Int) in
                let p = s.split(separator: ":").map { Int($0)! }
                return (p[0], p[1])
            }, uniquingKeysWith: { a, _ in a })
            #expect(byStep[0] == 16 && byStep[19] == 16, "equal shares before the first re-balance: \(byStep)")
            #expect((byStep[20] ?? 0) < 12 && (byStep[25] ?? 0) < 12, "the slow worker's share after it (absent: none): \(byStep)")
            let shares = MetricsLog.read(summary.metrics).compactMap(\.imagesPerWorker)
            #expect(shares.count == 26 && shares.allSatisfy { $0.reduce(0, +) == 32 }, "\(shares)")
            #expect(shares.first == [16, 16] && shares.last.map { $0[0] < 12 || $0[1] < 12 } == true, "\(shares)")
        }
    }
}

extension CoordinatorLayersTests {
    /// The status record travels with snake_case keys (what `svite status --json` prints and
    /// scripts read), a NaN loss as "nan" instead of failing the answer, and reads back equal.
    @Test func statusDocumentRoundTrips() throws {
        var d = StatusDocument()
        d.runId = "ab12"; d.state = .training; d.totalSteps = 9
        d.lastStepBytes = .init(up: 10, down: 20, upRatioToDenseFp32: 0.25, downRatioToDenseFp32: 0.5)
        var w = StepReport(step: 3, totalSteps: 9, epoch: 1, loss: .nan, trainAccuracy: 0.5, lr: 1e-3, gradNorm: 1, imagesPerSecond: 10,
                           elapsedSeconds: 2, etaSeconds: 4)
        w.sparsity = SparsityReport(density: 0.5, activeParameters: 10, totalParameters: 20, denseFLOPs: 100, sparseFLOPs: 60,
                                    explorationRate: 0.1, maskVersion: 3, heads: 4)
        d.window = w
        d.workers = [.init(id: "w", rank: 0, host: "h", pid: 7, threads: 2, state: .ready, secondsSinceHeard: 0.5, stepsDone: 3,
                           refused: 0, joins: 1, share: 64, imagesPerSecond: 120, bytesUp: 100, bytesDown: 200)]
        let json = try #require(try JSONSerialization.jsonObject(with: d.encoded()) as? [String: Any])
        let window = try #require(json["window"] as? [String: Any])
        #expect(json["run_id"] as? String == "ab12" && window["loss"] as? String == "nan" && json["total_steps"] as? Int == 9)
        #expect((json["last_step_bytes"] as? [String: Any])?["up_ratio_to_dense_fp32"] as? Double == 0.25 && json["last_eval"] == nil)
        #expect(((json["workers"] as? [[String: Any]])?.first?["images_per_second"] as? Double) == 120)
        let sparsity = try #require(window["sparsity"] as? [String: Any])
        #expect(sparsity["mask_version"] as? Int == 3 && sparsity["dense_flops"] as? Double == 100)
        let back = try StatusDocument.decode(d.encoded())
        #expect(back.window?.loss.isNaN == true && back.runId == "ab12" && back.workers == d.workers && back.window?.sparsity == w.sparsity)
    }
}

/// A worker that speaks the protocol but computes nothing: it answers each params frame
/// with `value` in every gradient entry (0: a harmless zero gradient; NaN: a broken one),
/// after `delay` seconds, telling `seen` the step and its share.
func fakeWorker(_ name: String, endpoint: String, count: Int, layoutHash: UInt64, delay: Double, value: Float = 0, loss: Double = 2.3,
                seen: (@Sendable (UInt64, UInt32) -> Void)? = nil) -> Thread {
    Thread {
        do {
            let ctx = try ZMQContext()
            let s = try ZMQSocket.workerDealer(ctx, identity: name, maxMessageBytes: -1, heartbeatMs: 500)
            try s.connect(endpoint)
            _ = try s.send([Frame(header: FrameHeader(type: .join, runID: 0, layoutHash: layoutHash),
                                  payload: Payload.encodeJSON(JoinMessage(name: name, host: "test", pid: 1, threads: 1))).encoded()])
            let values = [Float](repeating: value, count: count)
            while true {
                guard try Poller.readable([s], timeoutMs: 100)[0], let parts = try s.receive() else { continue }
                let frame = try Frame.decode(parts[0], limits: FrameLimits(maxRawBytes: 1 << 26))
                if frame.header.type == .stop { return }
                guard frame.header.type == .params else { continue }
                let images = try Payload.decodeParams(frame.payload, maxLayers: 0, maxIndices: 0).0.share(rank: 0)?.count ?? 0
                seen?(frame.header.step, images)
                if delay > 0 { Thread.sleep(forTimeInterval: delay) }
                let payload = values.withUnsafeBufferPointer {
                    Payload.grads(GradientSummary(images: images, lossSum: Double(images) * loss, correct: 0), codec: .fp32,
                                  values: $0.baseAddress!, count: count)
                }
                _ = try s.send([Frame(header: FrameHeader(type: .grads, runID: frame.header.runID, step: frame.header.step,
                                                          maskVersion: frame.header.maskVersion, layoutHash: layoutHash),
                                      payload: payload).encoded()])
            }
        } catch {
            Issue.record("worker \(name): \(error)")
        }
    }
}

extension CoordinatorLayersTests {
    /// A worker whose gradients are NaN is refused every step, named in the status with
    /// its refusals, and the honest worker's gradients carry the run to the end with
    /// finite weights (before: the NaN was averaged in and every later frame refused).
    @Test func nanGradientsAreRefusedAndTheRunGoesOn() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 32 * 6, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=6", "training.batch_size=32"])
            var o = ClusterOptions()
            o.bind = "tcp://127.0.0.1:*"
            o.statusBind = "tcp://127.0.0.1:*"
            o.expectedWorkers = 2
            o.heartbeatSeconds = 0.5
            o.balance = .equal
            let source = try ClusterGradientSource(config: config, options: o, logger: log)
            let endpoint = source.endpoint, statusEndpoint = source.statusEndpoint!
            let broken = fakeWorker("broken", endpoint: endpoint, count: source.layout.count, layoutHash: source.layout.hash,
                                    delay: 0, value: .nan)
            broken.start()
            let honest = Thread {
                do { _ = try WorkerNode(options: WorkerOptions(coordinator: endpoint, name: "honest", threads: 1), logger: Logger(label: "w")).run() } catch { Issue.record("honest worker: \(error)") }
            }
            honest.start()
            let status = RunStatus(config: config, parameters: 1)
            source.runStatus = status
            var options = Trainer.Options(runDirectory: "\(dir)/run")
            options.source = { _, _, _ in source }
            let trainer = try Trainer(config: config, options: options, logger: log)
            var doc: StatusDocument?
            let summary = try trainer.run { event in
                status.observe(event)
                if case .step(let r) = event, r.step == 5 { doc = try? queryStatus(statusEndpoint) }
            }
            while broken.isExecuting || honest.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
            #expect(summary.steps == 6 && trainer.server.optimizer.updates == 6)
            #expect(VectorOps.allFinite(trainer.server.params.pointer, trainer.server.params.count))
            #expect(summary.lastEval.map { $0.loss.isFinite } == true)
            let records = Dictionary(uniqueKeysWithValues: source.workers.values.map { ($0.name, $0) })
            #expect(records["broken"]?.refused == 6 && records["broken"]?.stepsDone == 0 && records["honest"]?.stepsDone == 6)
            #expect(source.lastRefusal?.contains("not finite") == true, "\(source.lastRefusal ?? "no refusal")")
            let shown = doc?.workers?.first { $0.id == "broken" }
            #expect((shown?.refused ?? 0) >= 4, "status: \(String(describing: doc?.workers))")
        }
    }

    /// Every worker's loss NaN, step after step (the weights they share diverged): the
    /// coordinator stops after its retries and says the model diverged and what to change,
    /// not that the protocol is broken (a NaN loss was once refused as a malformed frame).
    @Test func aRunWhoseEveryWorkerLossIsNaNStopsAsDiverged() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 32 * 6, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=6", "training.batch_size=32"])
            var o = ClusterOptions()
            o.bind = "tcp://127.0.0.1:*"
            o.expectedWorkers = 1
            o.heartbeatSeconds = 0.5
            let source = try ClusterGradientSource(config: config, options: o, logger: log)
            let lost = fakeWorker("lost", endpoint: source.endpoint, count: source.layout.count, layoutHash: source.layout.hash,
                                  delay: 0, loss: .nan)
            lost.start()
            var options = Trainer.Options(runDirectory: "\(dir)/run")
            options.source = { _, _, _ in source }
            let trainer = try Trainer(config: config, options: options, logger: log)
            do {
                _ = try trainer.run()
                Issue.record("a run whose every loss is NaN finished")
            } catch let e as ClusterError {
                guard case .diverged(let step, _, let reason) = e else { Issue.record("not diverged: \(e)"); return }
                #expect(step == 0 && reason.contains("loss not finite"), "\(reason)")
                #expect(e.description.contains("diverged") && e.description.contains("optimizer.lr"))
            }
            source.finish(reason: "test done")
            let deadline = Date().addingTimeInterval(10)
            while lost.isExecuting && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            #expect(!lost.isExecuting)
            #expect(trainer.server.optimizer.updates == 0 && VectorOps.allFinite(trainer.server.params.pointer, trainer.server.params.count))
        }
    }

    /// The finite check itself, on every lane position and the scalar tail.
    @Test func allFiniteFindsEveryNonFiniteValue() {
        for n in [0, 1, 7, 8, 9, 16, 23] {
            var v = [Float](repeating: 1.5, count: n)
            #expect(VectorOps.allFinite(v, n))
            for i in 0 ..< n {
                for bad in [Float.nan, .infinity, -.infinity] {
                    v[i] = bad
                    #expect(!VectorOps.allFinite(v, n), "n \(n), index \(i), \(bad)")
                    v[i] = i % 2 == 0 ? Float.greatestFiniteMagnitude : -0.0
                }
            }
            #expect(VectorOps.allFinite(v, n))
        }
    }
}

extension CoordinatorLayersTests {
    /// Two live worker processes given one --name: the second is refused with a reason
    /// and ends, the first keeps its place and does every step (before: they took the
    /// connection from each other every ~24 s, without a warning).
    @Test func aSecondLiveWorkerWithTheSameNameIsRefused() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 16 * 6, test: 16)
            let config = try tinyRunConfig(dataDir: dir, extra: ["training.epochs=0", "training.max_steps=6"])
            var o = ClusterOptions()
            o.bind = "tcp://127.0.0.1:*"
            o.statusBind = nil
            o.heartbeatSeconds = 0.5
            let source = try ClusterGradientSource(config: config, options: o, logger: log)
            let endpoint = source.endpoint
            let refusal = StateLog()
            func worker() -> Thread {
                Thread {
                    do { _ = try WorkerNode(options: WorkerOptions(coordinator: endpoint, name: "dup", threads: 1), logger: Logger(label: "w")).run() } catch { refusal.add("\(error)") }
                }
            }
            let first = worker()
            first.start()
            let deadline = Date().addingTimeInterval(10)
            while source.live.isEmpty && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            let second = worker()
            second.start()
            while second.isExecuting && Date() < deadline.addingTimeInterval(10) { Thread.sleep(forTimeInterval: 0.01) }
            var options = Trainer.Options(runDirectory: "\(dir)/run")
            options.source = { _, _, _ in source }
            let summary = try Trainer(config: config, options: options, logger: log).run()
            while first.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
            #expect(summary.steps == 6)
            #expect(refusal.states.count == 1 && refusal.states.first?.contains("in use by a live worker") == true, "\(refusal.states)")
            #expect(source.workers.count == 1 && source.workers.values.first?.stepsDone == 6)
        }
    }
}

final class StateLog: @unchecked Sendable {
    private let lock = NSLock()
    private var _states: [String] = []
    private var _done = false
    var states: [String] { lock.lock(); defer { lock.unlock() }; return _states }
    var done: Bool {
        get { lock.lock(); defer { lock.unlock() }; return _done }
        set { lock.lock(); _done = newValue; lock.unlock() }
    }
    func add(_ s: String) { lock.lock(); _states.append(s); lock.unlock() }
}

extension CoordinatorLayersTests {
    /// Joins with a 100,000-character, empty or control-character name, pid -1 or -5
    /// threads are refused with a reason the peer receives, and nobody is admitted (before:
    /// all were, and the names went to the log raw); log text from peers is escaped.
    @Test func badJoinsAreRefused() throws {
        let config = try tinyRunConfig(dataDir: "/nonexistent", extra: [])
        var o = ClusterOptions()
        o.bind = "tcp://127.0.0.1:*"
        o.statusBind = nil
        let source = try ClusterGradientSource(config: config, options: o, logger: log)
        let joins = [JoinMessage(name: String(repeating: "x", count: 100_000), host: "h", pid: 1, threads: 1),
                     JoinMessage(name: "", host: "h", pid: 1, threads: 1),
                     JoinMessage(name: "evil\nworker a joined", host: "h", pid: 1, threads: 1),
                     JoinMessage(name: "a\u{202E}b", host: "h", pid: 1, threads: 1),
                     JoinMessage(name: "w", host: "h", pid: -1, threads: 1),
                     JoinMessage(name: "w", host: "h", pid: 1, threads: -5)]
        let ctx = try ZMQContext()
        for (k, join) in joins.enumerated() {
            let s = try ZMQSocket.workerDealer(ctx, identity: "peer-\(k)", maxMessageBytes: -1, heartbeatMs: 500)
            try s.connect(source.endpoint)
            _ = try s.send([Frame(header: FrameHeader(type: .join, runID: 0, layoutHash: source.layout.hash),
                                  payload: Payload.encodeJSON(join)).encoded()])
            guard try Poller.readable([s], timeoutMs: 5000)[0], let parts = try s.receive() else {
                Issue.record("join \(k): no answer"); continue
            }
            let frame = try Frame.decode(parts[0], limits: FrameLimits(maxRawBytes: 1 << 26))
            #expect(frame.header.type == .reject, "join \(k) got \(frame.header.type)")
            s.close()
        }
        #expect(source.workers.isEmpty && source.badFrameTotal == joins.count)
        #expect("a\nb\u{202E}c\u{1B}[2J".escapedForLog == "a\\u{a}b\\u{202e}c\\u{1b}[2J")
        source.finish(reason: "test")
    }
}

extension CoordinatorLayersTests {
    /// A join that does not parse, one of another model's layout and a frame of another
    /// wire version each get a reject saying why (before: no reply at all, and the peer
    /// waited forever); a heartbeat of another run of the same model gets none (its worker
    /// joins again by itself, as after a coordinator restart).
    @Test func strangersHearWhyTheyAreRefused() throws {
        let config = try tinyRunConfig(dataDir: "/nonexistent", extra: [])
        var o = ClusterOptions()
        o.bind = "tcp://127.0.0.1:*"
        o.statusBind = nil
        let source = try ClusterGradientSource(config: config, options: o, logger: log)
        defer { source.finish(reason: "test") }
        let join = Payload.encodeJSON(JoinMessage(name: "w", host: "h", pid: 1, threads: 1))
        var otherVersion = Frame(header: FrameHeader(type: .join, runID: 0, layoutHash: source.layout.hash), payload: join).encoded()
        otherVersion[4] &+= 1
        let cases: [(String, [UInt8], String?)] = [
            ("bad JSON", Frame(header: FrameHeader(type: .join, runID: 0, layoutHash: source.layout.hash), payload: Array("{\"name\":".utf8)).encoded(),
             "could not be read"),
            ("another model", Frame(header: FrameHeader(type: .join, runID: 0, layoutHash: source.layout.hash ^ 1), payload: join).encoded(),
             "trains another model"),
            ("another version", otherVersion, "wire protocol"),
            ("another run, same model", Frame(header: FrameHeader(type: .heartbeat, runID: 12345, layoutHash: source.layout.hash), payload: []).encoded(), nil),
        ]
        let ctx = try ZMQContext()
        for (k, (what, bytes, expected)) in cases.enumerated() {
            let s = try ZMQSocket.workerDealer(ctx, identity: "stranger-\(k)", maxMessageBytes: -1, heartbeatMs: 500)
            defer { s.close() }
            try s.connect(source.endpoint)
            _ = try s.send([bytes])
            let answered = try Poller.readable([s], timeoutMs: expected == nil ? 1000 : 5000)[0]
            guard let expected else {
                #expect(!answered, "\(what): answered"); continue
            }
            guard answered, let parts = try s.receive() else { Issue.record("\(what): no answer"); continue }
            let frame = try Frame.decode(parts[0], limits: FrameLimits(maxRawBytes: 1 << 20))
            let reason = try Payload.decodeReason(frame.payload)
            #expect(frame.header.type == .reject && reason.contains(expected), "\(what): \(reason)")
        }
        #expect(source.workers.isEmpty)
    }
}

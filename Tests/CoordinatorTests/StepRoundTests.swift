import Config
import Core
import Model
import Testing
import TestSupport
import Wire
@testable import Coordinator
@testable import Training

/// The step round without sockets or a clock: the order gradients are added in, early,
/// late, lost, refused and stale answers, deadlines and a round given up.
@Suite("step round")
struct StepRoundTests {
    let model: ViTConfig
    let layout: ParameterLayout

    init() throws {
        model = try tinyRunConfig(dataDir: "/nonexistent").model
        layout = ParameterLayout(config: model)
    }

    func member(_ name: String, rank: Int) -> WorkerRecord {
        WorkerRecord(identity: Array(name.utf8), join: JoinMessage(name: name, host: "h", pid: 1, threads: 1), rank: rank, now: 0)
    }

    /// A gradient frame's payload: every value `v`, from `images` images, computed in `computeSeconds`.
    func answer(_ v: Float, images: UInt32 = 1, computeSeconds: Double? = nil) -> [UInt8] {
        let values = [Float](repeating: v, count: layout.count)
        var p = Payload.grads(GradientSummary(images: images, lossSum: Double(images), correct: 0), codec: .fp32, values: values, count: layout.count)
        if let c = computeSeconds { Payload.stampComputeSeconds(&p, c) }
        return p
    }

    func round(_ members: [WorkerRecord], planned: Int = 3) -> (StepRound, [[UInt8]: WorkerRecord]) {
        let aggregator = GradientAggregator(layout: layout, model: model)
        aggregator.begin(request: .none, masks: nil)
        let r = StepRound(step: 7, members: members, planned: planned, aggregator: aggregator)
        for w in members { w.sentAt = 0; w.share = 1; r.expect(w) }
        return (r, Dictionary(uniqueKeysWithValues: members.map { ($0.identity, $0) }))
    }

    /// 1e8, 1 and −1e8 sum to 0 in fp32 in name order (1e8 + 1 rounds to 1e8) and to 1 in
    /// the order they arrived: the mean is the name order's, and nothing is added before
    /// its turn.
    @Test func answersAreAddedInNameOrderNotInArrivalOrder() throws {
        let (a, b, c) = (member("a", rank: 2), member("b", rank: 0), member("c", rank: 1))
        let (r, byID) = round([a, b, c])
        r.arrived(c.identity, payload: answer(-1e8), bytes: 10, at: 1)
        #expect(r.addInOrder { byID[$0] }.isEmpty && r.pending.count == 3 && r.answers.isEmpty)
        r.arrived(a.identity, payload: answer(1e8), bytes: 10, at: 2)
        #expect(r.addInOrder { byID[$0] }.isEmpty && r.pending == [b.identity, c.identity])
        r.arrived(b.identity, payload: answer(1), bytes: 10, at: 3)
        #expect(r.addInOrder { byID[$0] }.isEmpty && r.isComplete)
        let g = try #require(r.finish())
        #expect(g.gradient[0] == 0, "the sum in name order is 0, in arrival order 1/3: got \(g.gradient[0] * 3)")
        #expect(g.workerImages == [1, 1, 1] && g.missingImages == 0 && g.bytesUp == 30)
        #expect(a.stepsDone == 1 && a.throughput == 0.5 && a.deadline.lastAnswer == 2)
    }

    /// The round's time runs from its first frame out to its last answer in; the slowest
    /// worker's own seconds are its compute, the rest the wire's. A round someone missed,
    /// or one that sent someone the whole state, measures nothing.
    @Test func aRoundSplitsIntoComputeAndWire() throws {
        let (a, b) = (member("a", rank: 0), member("b", rank: 1))
        let (r, byID) = round([a, b])
        a.sentAt = 10; b.sentAt = 10.5
        r.arrived(b.identity, payload: answer(1, computeSeconds: 0.25), bytes: 10, at: 11.5)
        r.arrived(a.identity, payload: answer(1, computeSeconds: 0.5), bytes: 10, at: 12)
        _ = r.addInOrder { byID[$0] }
        let g = try #require(r.finish())
        let t = try #require(g.timing)
        #expect(t.roundSeconds == 2 && t.computeSeconds == 0.5 && t.wireShare == 0.75, "\(t)")

        let (late, lateByID) = round([member("a", rank: 0), member("b", rank: 1)])
        let first = lateByID.values.min { $0.name < $1.name }!
        late.arrived(first.identity, payload: answer(1, computeSeconds: 0.1), bytes: 10, at: 1)
        _ = late.addInOrder { lateByID[$0] }
        late.late.append("b")
        late.stopWaiting(for: lateByID.values.first { $0.name == "b" }!.identity)
        #expect(try #require(late.finish()).timing == nil, "a late member: no measure")

        let (whole, wholeByID) = round([member("a", rank: 0)])
        let w = wholeByID.values.first!
        w.stateSentInRound = 7
        whole.arrived(w.identity, payload: answer(1, computeSeconds: 0.1), bytes: 10, at: 1)
        _ = whole.addInOrder { wholeByID[$0] }
        #expect(try #require(whole.finish()).timing == nil, "the whole state sent: no measure")
        #expect(RoundTiming(roundSeconds: 1, computeSeconds: 2).wireShare == 0, "a worker's clock running ahead is no negative wire")
    }

    /// A member lost after its answer arrived still counts; one lost before it answered is
    /// skipped, and the step goes on with the images it has.
    @Test func aLostMemberIsSkippedButAnAnswerAlreadyHereCounts() throws {
        let (a, b, c) = (member("a", rank: 0), member("b", rank: 1), member("c", rank: 2))
        let (r, byID) = round([a, b, c])
        r.arrived(b.identity, payload: answer(2, images: 2), bytes: 10, at: 1)
        _ = r.addInOrder { byID[$0] }
        r.stopWaiting(for: b.identity)   // lost after answering
        r.stopWaiting(for: a.identity)   // lost before answering
        #expect(!r.awaits(a.identity) && !r.isComplete)
        _ = r.addInOrder { byID[$0] }
        #expect(r.pending == [c.identity])
        r.arrived(c.identity, payload: answer(5, images: 1), bytes: 10, at: 2)
        _ = r.addInOrder { byID[$0] }
        let g = try #require(r.finish())
        #expect(g.gradient[0] == 3 && g.workerImages == [0, 2, 1] && g.missingImages == 0)
    }

    /// An answer that cannot be used is handed back for refusal; refused, the round stops
    /// waiting for its member and counts it; a non-finite one is counted as such.
    @Test func aRefusedAnswerLetsTheStepGoOn() throws {
        let (a, b) = (member("a", rank: 0), member("b", rank: 1))
        let (r, byID) = round([a, b], planned: 4)
        r.arrived(a.identity, payload: [1, 2, 3], bytes: 3, at: 1)
        r.arrived(b.identity, payload: answer(.nan, images: 2), bytes: 10, at: 1)
        let bad = r.addInOrder { byID[$0] }
        #expect(bad.map(\.identity) == [a.identity, b.identity])
        for (id, error) in bad { r.refuse(id, name: byID[id]!.name, error) }
        #expect(r.isComplete && r.refused == 2 && r.nonFinite == 1 && r.lastRefusal?.hasPrefix("b:") == true)
        #expect(r.finish() == nil, "no images arrived")
    }

    /// Only the first answer of a member the round waits for, to this step, is taken; a
    /// round given up takes none.
    @Test func staleDuplicateAndStrangersAnswersAreNotTaken() {
        let (a, b) = (member("a", rank: 0), member("b", rank: 1))
        let (r, _) = round([a])
        #expect(r.accepts(a.identity, step: 7) && !r.accepts(a.identity, step: 6) && !r.accepts(b.identity, step: 7))
        r.arrived(a.identity, payload: answer(1), bytes: 10, at: 1)
        #expect(!r.accepts(a.identity, step: 7))
        r.active = false
        #expect(r.pending == [a.identity])
    }

    /// A member is overdue after its deadline (`StepDeadline`: its measured speed, or the
    /// round's, times the factor, within floor and ceiling); one sent the whole state this
    /// round has the ceiling; one whose answer is here is never overdue.
    @Test func overdueMembersAreThoseLateForTheirDeadline() {
        var policy = DeadlinePolicy()
        policy.floorSeconds = 1; policy.ceilingSeconds = 60; policy.factor = 4
        let (a, b, c) = (member("a", rank: 0), member("b", rank: 1), member("c", rank: 2))
        let (r, byID) = round([a, b, c])
        for w in [a, b, c] { w.throughput = 1; w.share = 2 }   // 2 s expected, 8 s allowed
        c.stateSentInRound = 7
        #expect(r.overdue(now: 8, member: { byID[$0] }, policy: policy).isEmpty)
        let late = r.overdue(now: 9, member: { byID[$0] }, policy: policy)
        #expect(late.map(\.0.name) == ["a", "b"] && late.allSatisfy { $0.allowed == 8 })
        r.arrived(a.identity, payload: answer(1), bytes: 10, at: 9)
        #expect(r.overdue(now: 61, member: { byID[$0] }, policy: policy).map(\.0.name) == ["b", "c"])
    }
}

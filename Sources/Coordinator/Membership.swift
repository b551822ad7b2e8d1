import Wire

/// What the coordinator knows of one worker.
final class WorkerRecord {
    enum State: String { case ready, lost, left }
    let identity: [UInt8]
    let name: String
    /// What it said when it last joined (its host, pid and threads).
    var join: JoinMessage
    var host: String { join.host }
    var pid: Int32 { join.pid }
    var threads: Int { join.threads }
    let rank: Int
    var state: State = .ready
    /// When a frame of this worker last arrived, and when the coordinator last sent it one.
    var lastHeard: Double
    var lastSent = -Double.infinity
    var stepsDone = 0
    /// Answers to a step refused (bad frame, NaN values, another mask version).
    var refused = 0
    /// Join frames accepted from this id (more than one: it restarted or lost the coordinator).
    var joins = 1
    var bytesUp = 0
    var bytesDown = 0
    /// The server step whose parameters the worker holds (−1: none).
    var version = -1
    /// The mask version the worker holds (−1: none yet).
    var maskVersion = -1
    /// Images of its last share, when its params frame left, and its measured speed
    /// (images per second from params sent to gradient back, smoothed; nil: not yet).
    var share = 0
    var sentAt = 0.0
    var throughput: Double?
    /// The longest it took from a step frame leaving to its gradient arriving (or to the
    /// deadline it missed): a frame that takes that long on its link is not a lost peer.
    var slowestRoundTrip = 0.0
    /// Its deadlines: misses in a row, benching, its last answer in time.
    var deadline = DeadlineRecord()
    /// The round (step) in which it was last sent the whole state: that round's answer
    /// carries the transfer, so its deadline is the ceiling.
    var stateSentInRound: Int?
    /// The step it last missed and when that step's frame left, to time the late answer.
    var missed: (step: Int, sentAt: Double, images: Int)?

    /// Where it stands, as the status says it.
    func phase(at now: Double) -> StatusDocument.WorkerPhase {
        switch state {
        case .ready: deadline.standing(at: now)
        case .lost: .lost
        case .left: .left
        }
    }

    /// Folds in one step's speed.
    func measured(images: Int, seconds: Double) {
        guard images > 0, seconds > 0 else { return }
        // A decaying maximum: one slow step (the first loads data) is forgotten in tens of steps.
        slowestRoundTrip = max(seconds, 0.9 * slowestRoundTrip)
        let rate = Double(images) / seconds
        throughput = throughput.map { 0.7 * $0 + 0.3 * rate } ?? rate
    }

    init(identity: [UInt8], join: JoinMessage, rank: Int, now: Double) {
        self.identity = identity
        name = join.name; self.join = join
        self.rank = rank; lastHeard = now
    }
}

/// Who is in the run (ps-lite's Postoffice): joins and rejoins, ranks, liveness. It
/// holds no socket; the service thread tells it what arrived and when.
final class Membership {
    private(set) var records: [[UInt8]: WorkerRecord] = [:]
    private var nextRank = 0

    subscript(identity: [UInt8]) -> WorkerRecord? { records[identity] }

    /// Every worker ever seen, by rank.
    var all: [WorkerRecord] { records.values.sorted { $0.rank < $1.rank } }
    /// The workers that take part in the next step, by rank.
    var live: [WorkerRecord] { all.filter { $0.state == .ready } }

    enum Admission {
        case admitted(WorkerRecord, isNew: Bool)
        case refused(String)
    }

    /// A join. The same connection again (a worker that lost the coordinator) keeps its
    /// record and starts afresh, holding no parameters or mask. A new connection under a
    /// name in use is refused while that worker was heard within `aliveWithin` seconds (two
    /// live workers must not share a name); otherwise it replaces the old one (a restarted
    /// worker) and takes over its rank. Anything else gets the next rank.
    func admit(_ identity: [UInt8], join: JoinMessage, now: Double, aliveWithin: Double) -> Admission {
        if let old = records[identity] {
            old.state = .ready; old.join = JoinMessage(name: old.name, host: join.host, pid: join.pid, threads: join.threads)
            old.lastHeard = now; old.version = -1; old.maskVersion = -1
            old.joins += 1
            return .admitted(old, isNew: false)
        }
        let sameName = records.values.filter { $0.name == join.name }
        if let live = sameName.first(where: { $0.state == .ready && now - $0.lastHeard < aliveWithin }) {
            return .refused("the name \(join.name) is in use by a live worker on \(live.host) (pid \(live.pid)); give this one another --name")
        }
        let previous = sameName.max { $0.lastHeard < $1.lastHeard }
        let rank: Int
        if let previous {
            previous.state = .left   // replaced by its restart
            rank = previous.rank
        } else {
            rank = nextRank
            nextRank += 1
        }
        let record = WorkerRecord(identity: identity, join: join, rank: rank, now: now)
        record.joins = (previous?.joins ?? 0) + 1
        // A restart does not wipe its standing: a benched worker restarted stays benched.
        if let previous {
            record.deadline = previous.deadline
            record.throughput = previous.throughput
            record.slowestRoundTrip = previous.slowestRoundTrip
        }
        records[identity] = record
        return .admitted(record, isNew: true)
    }

    /// Ready workers not heard from for longer than `timeout` seconds, or than twice its
    /// slowest round trip: its heartbeats queue behind a big frame on a slow link.
    func silent(now: Double, timeout: Double) -> [WorkerRecord] {
        all.filter { $0.state == .ready && now - $0.lastHeard > max(timeout, 2 * $0.slowestRoundTrip) }
    }

    /// Ready workers the coordinator has sent nothing for `interval` seconds.
    func quiet(now: Double, interval: Double) -> [WorkerRecord] {
        live.filter { now - $0.lastSent > interval }
    }
}

import Config

/// How long a worker has to answer its share of a step, and what a worker that keeps
/// missing gets: the rules alone, with no socket or clock, so they are tested by
/// themselves and carried over whole by any redesign of the round.
///
/// A worker's time runs from when its step frame left to when its gradient arrived, so
/// its measured speed (`WorkerRecord.throughput`) includes its link as well as its
/// compute: a slow box and a slow link look alike here, and are treated alike.
public enum StepDeadline {
    /// Seconds a worker has for `share` images: `factor` times what its measured speed
    /// says the share takes (images per second, frames included), within the floor and
    /// the ceiling. A worker not yet measured is judged by the speed the round's answers
    /// so far show (`roundRate`); with neither, it has the ceiling.
    public static func seconds(share: Int, throughput: Double?, roundRate: Double?, policy: DeadlinePolicy) -> Double {
        let rate = [throughput, roundRate].compactMap { $0 }.first { $0.isFinite && $0 > 0 }
        guard let rate else { return policy.ceilingSeconds }
        let expected = Double(max(share, 1)) / rate
        return min(policy.ceilingSeconds, max(policy.floorSeconds, policy.factor * expected))
    }

    /// A worker the round still waits for once at least half of its `members` have
    /// answered is a straggler after `factor` times the slowest of those answers (within
    /// the floor and the ceiling): a worker slow for any share (its fixed costs at a few
    /// percent of a CPU, a frame that takes seconds on its link) is judged against the
    /// others, not against its own slowness. Nil before half have answered.
    public static func stragglerSeconds(answers: [(images: Int, seconds: Double)], members: Int, policy: DeadlinePolicy) -> Double? {
        guard let slowest = answers.map(\.seconds).max(), 2 * answers.count >= members else { return nil }
        return min(policy.ceilingSeconds, max(policy.floorSeconds, policy.factor * slowest))
    }

    /// The speed the answers of a round so far show: their images over their seconds
    /// (nil before any answer).
    public static func roundRate(answers: [(images: Int, seconds: Double)]) -> Double? {
        let images = answers.reduce(0) { $0 + $1.images }
        let seconds = answers.map(\.seconds).max() ?? 0
        guard images > 0, seconds > 0 else { return nil }
        // The slowest answer sets the pace the round already accepted; per worker it is
        // the images that one worker did in that time.
        return Double(images) / Double(answers.count) / seconds
    }
}

/// One worker's record of deadlines: misses in a row, what it missed in all, and when a
/// worker taken off the steps (benched) is tried again.
public struct DeadlineRecord: Sendable, Equatable {
    /// Steps missed in a row (0 after an answer in time).
    public private(set) var missesInARow = 0
    public private(set) var missedSteps = 0
    public private(set) var missedImages = 0
    /// When its last answer in time arrived (nil: never).
    public private(set) var lastAnswer: Double?
    /// Benched until then: no share, no step frame (nil: takes part).
    public private(set) var benchedUntil: Double?
    /// How long the next bench lasts; it doubles with each failed try, up to the policy's longest.
    private var nextBench: Double?
    /// Benches so far that ended in another miss, with no answer in between.
    public private(set) var failedTries = 0

    public init() {}

    public enum Outcome: Equatable {
        /// Taken off this step; it keeps its place in the next.
        case late
        /// Taken off the steps until the given time, then given a share again.
        case benched(until: Double)
        /// Never answered a step in time after being benched and tried again: drop it.
        case dropped
    }

    /// An answer in time: the worker is back in good standing.
    public mutating func answered(at now: Double) {
        missesInARow = 0
        failedTries = 0
        lastAnswer = now
        benchedUntil = nil
        nextBench = nil
    }

    /// A missed deadline with `images` of the step's images.
    public mutating func missed(images: Int, at now: Double, policy: DeadlinePolicy) -> Outcome {
        missesInARow += 1
        missedSteps += 1
        missedImages += images
        guard missesInARow >= policy.missesToBench else { return .late }
        if missesInARow > policy.missesToBench { failedTries += 1 }
        if lastAnswer == nil && failedTries >= policy.triesBeforeDrop { return .dropped }
        let seconds = nextBench ?? policy.firstBenchSeconds
        nextBench = min(2 * seconds, policy.longestBenchSeconds)
        benchedUntil = now + seconds
        return .benched(until: now + seconds)
    }

    /// Whether the worker gets a share of a step starting at `now`.
    public func takesPart(at now: Double) -> Bool { benchedUntil.map { now >= $0 } ?? true }

    /// A ready worker's standing: stuck while benched, late after a miss, else ready.
    public func standing(at now: Double) -> StatusDocument.WorkerPhase {
        if !takesPart(at: now) { return .stuck }
        return missesInARow > 0 ? .late : .ready
    }
}

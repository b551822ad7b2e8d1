/// When a worker's answer to a step is late and what happens to one that keeps missing
/// (the `communication.step_deadline_*` keys; the rules are `StepDeadline` and
/// `DeadlineRecord` in Coordinator).
public struct DeadlinePolicy: Sendable, Equatable, Codable {
    /// No worker is late before this many seconds from when its frame left.
    public var floorSeconds = 1.0
    /// Nor given longer than this, whatever its measured speed.
    public var ceilingSeconds = 60.0
    /// Times what the worker's measured speed says its share takes, or (once half the
    /// round has answered) times the slowest answer so far.
    public var factor = 4.0
    /// Misses in a row that take a worker off the steps for a while (benched).
    public var missesToBench = 3
    /// The first bench; each one that ends in another miss doubles it, up to the longest.
    public var firstBenchSeconds = 30.0
    public var longestBenchSeconds = 600.0
    /// A worker that has never answered in time is dropped after this many benches that
    /// ended in another miss.
    public var triesBeforeDrop = 1

    public init() {}
}

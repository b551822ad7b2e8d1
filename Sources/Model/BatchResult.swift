/// Loss and accuracy over one batch.
public struct BatchResult: Sendable, Equatable {
    /// Σ over images of the (label-smoothed) cross-entropy.
    public var lossSum: Double
    /// Images whose arg-max logit equals the label.
    public var correct: Int
    public var count: Int
    public var meanLoss: Double { count == 0 ? 0 : lossSum / Double(count) }
    public var accuracy: Double { count == 0 ? 0 : Double(correct) / Double(count) }

    public init(lossSum: Double = 0, correct: Int = 0, count: Int = 0) {
        self.lossSum = lossSum; self.correct = correct; self.count = count
    }

    public static func + (a: BatchResult, b: BatchResult) -> BatchResult {
        BatchResult(lossSum: a.lossSum + b.lossSum, correct: a.correct + b.correct, count: a.count + b.count)
    }
}

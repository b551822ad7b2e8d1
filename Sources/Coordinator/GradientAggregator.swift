import Core
import Kernels
import Model
import Sparsity
import Training
import Wire

/// Merges the workers' gradient frames of one step: the image-weighted mean gradient, and
/// whatever the step's request asked for besides (grow candidates, unit scores), merged by
/// the reply's kind. Sparse runs are summed in packed space (active values only) and
/// unpacked once at the end. It holds no socket: it takes payload bytes and is tested alone.
final class GradientAggregator {
    let layout: ParameterLayout
    let model: ViTConfig
    /// Σ images·gradient of the workers so far, packed when the run is sparse; then the mean.
    private let sum: FloatBuffer
    /// One worker's decoded values.
    private let incoming: FloatBuffer
    /// The mean gradient in layout order (sparse runs: unpacked from `sum`).
    private let unpacked: FloatBuffer
    /// Σ images·value of top-k frames, in layout order (they name their places).
    private let topKSum: FloatBuffer
    private var sawTopK = false
    /// The replies to the step's request (grow candidates, unit scores), merged.
    private let replies: ReplyMerger
    /// Σ images·mean square per tensor of the workers that sent them, and their images.
    private var meanSquareSum: [Double] = []
    private var meanSquareImages = 0
    private var masks: MaskSet?
    private(set) var request = StepRequest.none
    private(set) var expectedReply = ExpectedReply.none
    private(set) var images = 0
    private(set) var result = BatchResult()

    init(layout: ParameterLayout, model: ViTConfig) {
        self.layout = layout
        self.model = model
        sum = FloatBuffer(count: layout.count)
        incoming = FloatBuffer(count: layout.count)
        unpacked = FloatBuffer(count: layout.count)
        topKSum = FloatBuffer(count: layout.count)
        replies = ReplyMerger(parameters: layout.count, model: model)
    }

    /// Values a worker sends: the active ones of a sparse run, else all.
    var valueCount: Int { masks?.packedCount ?? layout.count }

    /// Starts a step that asked `request` of workers holding `masks`.
    func begin(request: StepRequest, masks: MaskSet?) {
        self.request = request
        self.masks = masks
        images = 0
        result = BatchResult()
        sum.zero()
        if sawTopK { topKSum.zero(); sawTopK = false }
        meanSquareSum = []
        meanSquareImages = 0
        expectedReply = request.expectedReply(masks: masks, model: model)
        replies.begin(request: request, masks: masks)
    }

    /// Decodes one worker's grads payload and adds it, weighted by its images. A bad
    /// payload throws and adds nothing.
    @discardableResult
    func add(payload: [UInt8]) throws -> GradientSummary {
        let n = valueCount
        let d = try Payload.decodeGrads(payload, into: incoming.pointer, count: n, expecting: expectedReply, layout: layout)
        let s = d.summary
        let weight = Float(s.images)
        // A NaN or infinite value would poison the mean, the moments and every weight after.
        guard d.sparse?.isFinite ?? VectorOps.allFinite(incoming.pointer, n), s.lossSum.isFinite else {
            throw WireError.nonFinite(s.lossSum.isFinite ? "gradient values" : "loss")
        }
        try replies.check(d.reply)
        // Everything is checked: accumulate.
        replies.add(d.reply, weight: weight)
        if let ms = d.meanSquares {
            if meanSquareSum.isEmpty { meanSquareSum = [Double](repeating: 0, count: ms.count) }
            for (i, v) in ms.enumerated() { meanSquareSum[i] += Double(s.images) * Double(v) }
            meanSquareImages += Int(s.images)
        }
        if let sparse = d.sparse {
            // Entries on inactive weights (none from an honest worker) are masked by the update.
            sparse.add(into: topKSum.pointer, weight: weight, layout: layout)
            sawTopK = true
        } else {
            let acc = sum.pointer, g = UnsafePointer(incoming.pointer)
            for i in 0 ..< n { acc[i] += weight * g[i] }
        }
        images += Int(s.images)
        result = result + BatchResult(lossSum: s.lossSum, correct: Int(s.correct), count: Int(s.images))
        return s
    }

    /// The step's mean gradient and merged replies (nil when no images arrived). The
    /// pointers stay valid until the next `begin`.
    func finish(bytesUp: Int, bytesDown: Int, workers: Int) -> StepGradient? {
        guard images > 0 else { return nil }
        let inverse = 1 / Float(images)
        VectorOps.scale(sum.pointer, inverse, valueCount)
        var gradient = sum.pointer
        if let m = masks {
            m.unpack(sum.pointer, into: unpacked.pointer)
            gradient = unpacked.pointer
        }
        if sawTopK {
            let g = gradient, t = UnsafePointer(topKSum.pointer)
            for i in 0 ..< layout.count { g[i] += inverse * t[i] }
        }
        var step = StepGradient(gradient: gradient, result: result, bytesUp: bytesUp, bytesDown: bytesDown,
                                workers: workers, replies: replies.finish(inverse: inverse))
        if meanSquareImages > 0 { step.meanSquares = meanSquareSum.map { $0 / Double(meanSquareImages) } }
        return step
    }
}

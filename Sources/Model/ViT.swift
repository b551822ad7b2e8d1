import Core
import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// A Vision Transformer over a flat parameter buffer: pure functions of (parameters,
/// images, labels) that write activations into a workspace and gradients into a buffer
/// of the same layout as the parameters. Holds no parameters itself, so the coordinator
/// and every worker replica can share one definition.
public final class ViTModel: Sendable {
    public let config: ViTConfig
    public let layout: ParameterLayout
    public let offsets: ModelOffsets

    public init(config: ViTConfig) {
        self.config = config
        self.layout = ParameterLayout(config: config)
        self.offsets = ModelOffsets(layout, depth: config.depth)
    }

    /// Multiply-adds ×2 of one image's forward pass (see `ViTConfig.forwardFLOPsPerImage`).
    public var forwardFLOPsPerImage: Double { config.forwardFLOPsPerImage }
}

/// Activations for one batch size, allocated once and reused every step. The batch is
/// split into lanes (one per thread); each lane owns its slice's activations, its
/// backward scratch and (for lanes after the first) a private gradient buffer that is
/// summed into the caller's at the end of the step.
public final class ViTWorkspace {
    public let batch: Int
    public let threads: Int
    public let training: Bool
    /// How the blocks' matrix products (linear layers and attention) run.
    public let mode: MatMulMode
    public var precision: Precision { mode.precision }
    let lanes: [Lane]
    let model: ViTModel

    public var laneCount: Int { lanes.count }

    /// threads: how many threads the model may use. Lanes = min(threads, batch); when a
    /// single lane remains (batch 1), the matrix products get the threads instead.
    /// precision: bf16 rounds the operands of the blocks' linear layers and attention
    /// products to bfloat16 (fp32 accumulation); the patch embedding, the token scorer and
    /// the head stay fp32, as do every norm, softmax, activation and gradient buffer.
    /// backend: the fp32 products' backend for this workspace (nil: the process's choice).
    public init(model: ViTModel, batch: Int, threads: Int, training: Bool = true, precision: Precision = .fp32,
                backend: GEMMBackend? = nil) {
        precondition(batch >= 1, "ViTWorkspace: batch must be >= 1")
        precondition(threads >= 1, "ViTWorkspace: threads must be >= 1")
        self.model = model
        self.batch = batch
        self.threads = threads
        self.training = training
        self.mode = MatMulMode(precision, backend: backend)
        let laneCount = min(threads, batch)
        lanes = (0 ..< laneCount).map { i in
            let r = Parallel.slice(i, of: laneCount, total: batch)
            return Lane(config: model.config, layoutCount: model.layout.count, range: r,
                        training: training, ownsGradients: i > 0, threads: laneCount > 1 ? 1 : threads)
        }
    }

    /// Bytes held by activations and lane gradient buffers.
    public var bytes: Int { lanes.reduce(0) { $0 + $1.bytes } }
}

/// One lane's activation memory: a single buffer, sliced by offsets.
final class Lane {
    let range: Range<Int>
    var batch: Int { range.count }
    /// Threads of this lane's products: 1 when the batch is split, all of them otherwise.
    let threads: Int
    let store: FloatBuffer
    /// A sparse layer's weight gradient at its active entries, before it is scattered.
    var sparseScratch: FloatBuffer?
    let grads: FloatBuffer?
    var result = BatchResult()
    /// Per (block, head): Σ A·∂L/∂A over this lane's rows, when asked for (S2ViTE scores).
    var saliency: [Float] = []

    // forward
    let patches, x0: Int
    /// SViTE+ selector (offsets 0 when the model has none): per patch its score and soft
    /// weight, the hidden pre-activation and GELU output, and backward scratch.
    let selScores, selSoft, selHidden, selGelu, selGrad, selHiddenGrad, dX0: Int
    /// Attention relaxation: per (image, block token) the log of its key weight added to
    /// every attention logit (0 except in a frozen selection), and ∂L/∂(that log weight)
    /// summed over blocks, heads and queries (b, k+1).
    let selKeyBias, selKeyGrad: Int
    /// Per image, the kept patch indices, ascending (b, k), and their straight-through
    /// weights (1 except in a frozen selection).
    var selected: [Int32] = []
    var selectedWeight: [Float] = []
    struct BlockActivations {
        var xIn, ln1, ln1Mean, ln1Rstd, qkv, probs, attn, xMid, ln2, ln2Mean, ln2Rstd, fc1, gelu, xOut: Int
    }
    let blocks: [BlockActivations]
    let clsIn, lnf, lnfMean, lnfRstd, logits, probs: Int
    // backward
    let dX, dLn, dQkv, dAttn, dGelu, dH, scratch, dLogits, dLnf, dCls, dPatches: Int

    var bytes: Int { (store.count + (grads?.count ?? 0)) * 4 }

    init(config c: ViTConfig, layoutCount: Int, range: Range<Int>, training: Bool, ownsGradients: Bool, threads: Int) {
        self.range = range
        self.threads = threads
        let b = range.count, n = c.blockTokens, d = c.dim
        let rows = b * n
        var cursor = 0
        func take(_ count: Int) -> Int {
            let o = cursor
            cursor += (count + 15) / 16 * 16
            return o
        }
        patches = take(b * c.numPatches * c.patchDim)
        x0 = take(b * c.tokens * d)
        var xIn = x0
        if c.hasTokenSelector {
            let p = b * c.numPatches, h = c.selectorHidden
            selScores = take(p); selSoft = take(p)
            selHidden = take(p * h); selGelu = take(p * h)
            selGrad = training ? take(2 * p) : 0
            selHiddenGrad = training ? take(2 * p * h) : 0
            selKeyBias = take(rows); selKeyGrad = training ? take(rows) : 0
            dX0 = training ? take(b * c.tokens * d) : 0
            xIn = take(rows * d)
            selected = [Int32](repeating: 0, count: b * c.keptPatches)
            selectedWeight = [Float](repeating: 1, count: b * c.keptPatches)
        } else {
            (selScores, selSoft, selHidden, selGelu, selGrad, selHiddenGrad, dX0) = (0, 0, 0, 0, 0, 0, 0)
            (selKeyBias, selKeyGrad) = (0, 0)
        }
        var blocks: [BlockActivations] = []
        for l in 0 ..< c.depth {
            let aw = c.attentionWidth(inBlock: l), hid = c.hidden(inBlock: l)
            let a = BlockActivations(
                xIn: xIn, ln1: take(rows * d), ln1Mean: take(rows), ln1Rstd: take(rows),
                qkv: take(rows * 3 * aw), probs: take(b * c.heads(inBlock: l) * n * n), attn: take(rows * aw),
                xMid: take(rows * d), ln2: take(rows * d), ln2Mean: take(rows), ln2Rstd: take(rows),
                fc1: take(rows * hid), gelu: take(rows * hid), xOut: take(rows * d))
            blocks.append(a)
            xIn = a.xOut
        }
        self.blocks = blocks
        clsIn = take(b * d); lnf = take(b * d); lnfMean = take(b); lnfRstd = take(b)
        logits = take(b * c.numClasses); probs = take(b * c.numClasses)
        if training {
            let aw = c.maxAttentionWidth, hid = c.maxHidden
            dX = take(rows * d); dLn = take(rows * d); dQkv = take(rows * 3 * aw); dAttn = take(rows * aw)
            dGelu = take(rows * hid); dH = take(rows * hid)
            scratch = take(b * (0 ..< c.depth).map { c.heads(inBlock: $0) }.max()! * n * n)
            dLogits = take(b * c.numClasses); dLnf = take(b * d); dCls = take(b * d)
            dPatches = take(c.numPatches * c.patchDim)
        } else {
            (dX, dLn, dQkv, dAttn, dGelu, dH, scratch, dLogits, dLnf, dCls, dPatches) = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        }
        store = FloatBuffer(count: cursor)
        grads = training && ownsGradients ? FloatBuffer(count: layoutCount) : nil
    }
}

extension ViTModel {
    /// Forward pass over a batch. images: (B, C, H, W) normalised floats; labels: (B) or
    /// nil. Returns loss (when labels are given) and accuracy; logits stay in the
    /// workspace (`copyLogits`).
    /// `selection` (models with a token selector): Gumbel noise and temperature for
    /// training; nil selects the top-k scores deterministically (evaluation).
    @discardableResult
    public func forward(params: UnsafePointer<Float>, images: UnsafePointer<Float>,
                        labels: UnsafePointer<Int32>?, smoothing: Float = 0,
                        workspace ws: ViTWorkspace, selection: TokenSelection? = nil, mix: MixedTargets? = nil,
                        sparse: SparseLayers? = nil) -> BatchResult {
        precondition(ws.model === self, "ViTModel.forward: workspace belongs to another model")
        precondition(sparse.map { $0.model === self } ?? true, "ViTModel.forward: sparse layers of another model")
        sparse?.gather(params)
        Parallel.forEach(ws.lanes.count) { i in
            let lane = ws.lanes[i]
            MatMul.setThreadsForCallingThread(lane.threads, backend: ws.mode.backend)
            lane.result = self.laneForward(lane, params: params, mode: ws.mode, sparse: sparse,
                                           images: images + lane.range.lowerBound * self.config.imageValues,
                                           labels: labels.map { $0 + lane.range.lowerBound }, smoothing: smoothing,
                                           selection: selection?.lane(lane.range, patches: self.config.numPatches, kept: self.config.keptPatches),
                                           mix: mix?.advanced(by: lane.range.lowerBound))
        }
        return ws.lanes.reduce(BatchResult()) { $0 + $1.result }
    }

    /// Forward and backward over a batch: `grads` is overwritten with ∂L/∂θ where L is
    /// the mean label-smoothed cross-entropy over the batch. `inputGrad` (B, C, H, W),
    /// if given, is overwritten with ∂L/∂images. `headSaliency` (depth, heads), if given,
    /// is overwritten with each head's Σ A·∂L/∂A over the batch, A being the head's
    /// attention output (before attn.proj): the first-order change of L when the head's
    /// output is scaled, i.e. its Taylor importance before the absolute value.
    /// `sparse`: the block layers computed on sparse kernels; their weight gradient is
    /// computed at the active entries only (zero elsewhere) unless `fullWeightGradient`.
    @discardableResult
    public func forwardBackward(params: UnsafePointer<Float>, grads: UnsafeMutablePointer<Float>,
                                images: UnsafePointer<Float>, labels: UnsafePointer<Int32>,
                                smoothing: Float = 0, workspace ws: ViTWorkspace,
                                inputGrad: UnsafeMutablePointer<Float>? = nil,
                                headSaliency: UnsafeMutablePointer<Float>? = nil,
                                selection: TokenSelection? = nil, mix: MixedTargets? = nil,
                                sparse: SparseLayers? = nil, fullWeightGradient: Bool = false) -> BatchResult {
        precondition(ws.model === self, "ViTModel.forwardBackward: workspace belongs to another model")
        precondition(ws.training, "ViTModel.forwardBackward: workspace was made with training: false")
        precondition(sparse.map { $0.model === self } ?? true, "ViTModel.forwardBackward: sparse layers of another model")
        sparse?.gather(params)
        let total = layout.count
        let lossScale = 1 / Float(ws.batch)
        let headSlots = (0 ..< config.depth).reduce(0) { $0 + config.heads(inBlock: $1) }
        Parallel.forEach(ws.lanes.count) { i in
            let lane = ws.lanes[i]
            MatMul.setThreadsForCallingThread(lane.threads, backend: ws.mode.backend)
            if let sparse, !sparse.isEmpty, (lane.sparseScratch?.count ?? 0) < sparse.maxActive {
                lane.sparseScratch = FloatBuffer(count: sparse.maxActive)
            }
            lane.saliency = headSaliency == nil ? [] : [Float](repeating: 0, count: headSlots)
            let g = lane.grads?.pointer ?? grads
            VectorOps.zero(g, total)
            let start = lane.range.lowerBound
            let sel = selection?.lane(lane.range, patches: self.config.numPatches, kept: self.config.keptPatches)
            lane.result = self.laneForward(lane, params: params, mode: ws.mode, sparse: sparse,
                                           images: images + start * self.config.imageValues,
                                           labels: labels + start, smoothing: smoothing, selection: sel, mix: mix?.advanced(by: start))
            self.laneBackward(lane, params: params, mode: ws.mode, sparse: sparse, fullWeightGradient: fullWeightGradient,
                              grads: g, labels: labels + start,
                              smoothing: smoothing, lossScale: lossScale, mix: mix?.advanced(by: start),
                              inputGrad: inputGrad.map { $0 + start * self.config.imageValues }, selection: sel)
        }
        if let headSaliency {
            headSaliency.update(repeating: 0, count: headSlots)
            for lane in ws.lanes { for j in 0 ..< headSlots { headSaliency[j] += lane.saliency[j] } }
        }
        // Sum the other lanes' gradients into the caller's buffer, split by ranges.
        if ws.lanes.count > 1 {
            Parallel.forRanges(total: total, threads: ws.threads, grain: 1 << 14) { r in
                for lane in ws.lanes.dropFirst() {
                    VectorOps.accumulate(grads + r.lowerBound, lane.grads!.pointer + r.lowerBound, r.count)
                }
            }
        }
        return ws.lanes.reduce(BatchResult()) { $0 + $1.result }
    }

    /// Copies the last pass's logits, (B, classes), into `out`.
    public func copyLogits(from ws: ViTWorkspace, into out: UnsafeMutablePointer<Float>) {
        let k = config.numClasses
        for lane in ws.lanes {
            (out + lane.range.lowerBound * k).update(from: lane.store.pointer + lane.logits, count: lane.batch * k)
        }
    }

    // MARK: - one lane

    func laneForward(_ lane: Lane, params P: UnsafePointer<Float>, mode pr: MatMulMode, sparse: SparseLayers?,
                     images: UnsafePointer<Float>,
                     labels: UnsafePointer<Int32>?, smoothing: Float, selection: TokenSelection? = nil,
                     mix: MixedTargets? = nil) -> BatchResult {
        let c = config, o = offsets
        let A = lane.store.pointer
        let b = lane.batch, nFull = c.tokens, n = c.blockTokens, d = c.dim
        let np = c.numPatches, k = c.patchDim, rows = b * n
        let eps = ViTConfig.layerNormEps

        // patches: (b, P, C·p·p) ← images: (b, C, H, W)
        Patchify.forward(A + lane.patches, images, batch: b, channels: c.inChannels,
                         imageSize: c.imageSize, patchSize: c.patchSize)
        // x0: (b, N, D) = [cls; patches·Wᵀ + bias] + pos_embed
        let x0 = A + lane.x0
        for i in 0 ..< b {
            let xi = x0 + i * nFull * d
            xi.update(from: P + o.posEmbed, count: nFull * d)
            VectorOps.accumulate(xi, P + o.clsToken, d)
            Bias.forward(xi + d, bias: P + o.patchBias, rows: np, cols: d)
            MatMul.gemm(transA: false, transB: true, m: np, n: d, k: k, alpha: 1,
                       a: A + lane.patches + i * np * k, lda: k, b: P + o.patchWeight, ldb: k,
                       beta: 1, c: xi + d, ldc: d, mode: pr.fp32)
        }

        // SViTE+: keep CLS and the k selected patches, (b, k+1, D), for every block.
        if c.hasTokenSelector { selectorForward(lane, params: P, selection: selection, mode: pr.fp32) }
        // Only a frozen selection under the attention relaxation weights keys (w ≠ 1).
        let keyBias: UnsafePointer<Float>? = selection?.frozen != nil && selection?.relaxation == .attention
            ? UnsafePointer(A + lane.selKeyBias) : nil

        for (l, act) in lane.blocks.enumerated() {
            let w = o.blocks[l]
            // a: attention width (kept heads × head width), hid: MLP width; D and 4D unless compact
            let a = c.attentionWidth(inBlock: l), hid = c.hidden(inBlock: l)
            // ln1: (b·N, D)
            LayerNorm.forward(y: A + act.ln1, mean: A + act.ln1Mean, rstd: A + act.ln1Rstd, x: A + act.xIn,
                              weight: P + w.norm1Weight, bias: P + w.norm1Bias, rows: rows, dim: d, eps: eps)
            // qkv: (b·N, 3a)
            linearForward(.qkv, block: l, y: A + act.qkv, x: A + act.ln1, params: P, rows: rows, mode: pr,
                          sparse: sparse, threads: lane.threads)
            // attn: (b, N, a); probs: (b, H, N, N)
            Attention.forward(out: A + act.attn, probs: A + act.probs, qkv: A + act.qkv,
                              batch: b, tokens: n, heads: c.heads(inBlock: l), headDim: c.headDim, mode: pr,
                              keyBias: keyBias)
            // xMid = xIn + attn·Wpᵀ + bp
            linearForward(.proj, block: l, y: A + act.xMid, x: A + act.attn, residual: A + act.xIn, params: P,
                          rows: rows, mode: pr, sparse: sparse, threads: lane.threads)
            LayerNorm.forward(y: A + act.ln2, mean: A + act.ln2Mean, rstd: A + act.ln2Rstd, x: A + act.xMid,
                              weight: P + w.norm2Weight, bias: P + w.norm2Bias, rows: rows, dim: d, eps: eps)
            // fc1: (b·N, hidden), gelu: (b·N, hidden)
            linearForward(.fc1, block: l, y: A + act.fc1, x: A + act.ln2, params: P, rows: rows, mode: pr,
                          sparse: sparse, threads: lane.threads)
            GELU.forward(A + act.gelu, A + act.fc1, count: rows * hid)
            // xOut = xMid + gelu·W2ᵀ + b2
            linearForward(.fc2, block: l, y: A + act.xOut, x: A + act.gelu, residual: A + act.xMid, params: P,
                          rows: rows, mode: pr, sparse: sparse, threads: lane.threads)
        }

        // Only the CLS token reaches the head, so the final norm runs on it alone.
        let last = A + lane.blocks[c.depth - 1].xOut
        for i in 0 ..< b { (A + lane.clsIn + i * d).update(from: last + i * n * d, count: d) }
        LayerNorm.forward(y: A + lane.lnf, mean: A + lane.lnfMean, rstd: A + lane.lnfRstd, x: A + lane.clsIn,
                          weight: P + o.normWeight, bias: P + o.normBias, rows: b, dim: d, eps: eps)
        Linear.forward(y: A + lane.logits, x: A + lane.lnf, weight: P + o.headWeight, bias: P + o.headBias,
                       rows: b, inFeatures: d, outFeatures: c.numClasses, mode: pr.fp32)

        var result = BatchResult(count: b)
        if let labels {
            result.lossSum = CrossEntropy.forward(probs: A + lane.probs, logits: A + lane.logits, labels: labels,
                                                  rows: b, classes: c.numClasses, smoothing: smoothing, mix: mix)
            result.correct = Metrics.correct(logits: A + lane.logits, labels: labels, rows: b, classes: c.numClasses)
        }
        return result
    }

    func laneBackward(_ lane: Lane, params P: UnsafePointer<Float>, mode pr: MatMulMode, sparse: SparseLayers?,
                      fullWeightGradient: Bool, grads G: UnsafeMutablePointer<Float>,
                      labels: UnsafePointer<Int32>, smoothing: Float, lossScale: Float, mix: MixedTargets? = nil,
                      inputGrad: UnsafeMutablePointer<Float>?, selection: TokenSelection? = nil) {
        let c = config, o = offsets
        let A = lane.store.pointer
        let b = lane.batch, n = c.blockTokens, d = c.dim
        let np = c.numPatches, k = c.patchDim, rows = b * n

        // head: dlogits = (p − q)/B
        VectorOps.zero(A + lane.dLogits, b * c.numClasses)
        CrossEntropy.backward(dlogits: A + lane.dLogits, probs: A + lane.probs, labels: labels, rows: b,
                              classes: c.numClasses, smoothing: smoothing, scale: lossScale, mix: mix)
        VectorOps.zero(A + lane.dLnf, b * d)
        Linear.backward(dx: A + lane.dLnf, dweight: G + o.headWeight, dbias: G + o.headBias, dy: A + lane.dLogits,
                        x: A + lane.lnf, weight: P + o.headWeight, rows: b, inFeatures: d, outFeatures: c.numClasses, mode: pr.fp32)
        VectorOps.zero(A + lane.dCls, b * d)
        LayerNorm.backward(dx: A + lane.dCls, dweight: G + o.normWeight, dbias: G + o.normBias, dy: A + lane.dLnf,
                           x: A + lane.clsIn, mean: A + lane.lnfMean, rstd: A + lane.lnfRstd,
                           weight: P + o.normWeight, rows: b, dim: d)
        // dX: (b, N, D), the residual stream's gradient, non-zero only at CLS so far
        let dX = A + lane.dX
        VectorOps.zero(dX, rows * d)
        for i in 0 ..< b { (dX + i * n * d).update(from: A + lane.dCls + i * d, count: d) }
        let keyGrad = c.hasTokenSelector && selection?.relaxation == .attention
        if keyGrad { VectorOps.zero(A + lane.selKeyGrad, rows) }
        let scratch = lane.sparseScratch?.pointer

        for l in stride(from: c.depth - 1, through: 0, by: -1) {
            let act = lane.blocks[l], w = o.blocks[l]
            let a = c.attentionWidth(inBlock: l), hid = c.hidden(inBlock: l)
            // MLP branch: xOut = xMid + fc2(gelu(fc1(ln2(xMid))))
            VectorOps.zero(A + lane.dGelu, rows * hid)
            linearBackward(.fc2, block: l, dx: A + lane.dGelu, dy: dX, x: A + act.gelu, params: P, grads: G, rows: rows,
                           mode: pr, sparse: sparse, fullWeightGradient: fullWeightGradient, scratch: scratch, threads: lane.threads)
            VectorOps.zero(A + lane.dH, rows * hid)
            GELU.backward(dx: A + lane.dH, dy: A + lane.dGelu, x: A + act.fc1, count: rows * hid)
            VectorOps.zero(A + lane.dLn, rows * d)
            linearBackward(.fc1, block: l, dx: A + lane.dLn, dy: A + lane.dH, x: A + act.ln2, params: P, grads: G, rows: rows,
                           mode: pr, sparse: sparse, fullWeightGradient: fullWeightGradient, scratch: scratch, threads: lane.threads)
            // dX now becomes ∂L/∂xMid: the residual path plus the norm's contribution
            LayerNorm.backward(dx: dX, dweight: G + w.norm2Weight, dbias: G + w.norm2Bias, dy: A + lane.dLn,
                               x: A + act.xMid, mean: A + act.ln2Mean, rstd: A + act.ln2Rstd,
                               weight: P + w.norm2Weight, rows: rows, dim: d)
            // Attention branch: xMid = xIn + proj(attn(qkv(ln1(xIn))))
            VectorOps.zero(A + lane.dAttn, rows * a)
            linearBackward(.proj, block: l, dx: A + lane.dAttn, dy: dX, x: A + act.attn, params: P, grads: G, rows: rows,
                           mode: pr, sparse: sparse, fullWeightGradient: fullWeightGradient, scratch: scratch, threads: lane.threads)
            if !lane.saliency.isEmpty {
                let heads = c.heads(inBlock: l), hd = c.headDim
                let first = (0 ..< l).reduce(0) { $0 + c.heads(inBlock: $1) }
                let at = A + act.attn, dA = A + lane.dAttn
                for h in 0 ..< heads {
                    var s: Float = 0
                    for r in 0 ..< rows { s += VectorOps.dot(at + r * a + h * hd, dA + r * a + h * hd, hd) }
                    lane.saliency[first + h] += s
                }
            }
            VectorOps.zero(A + lane.dQkv, rows * 3 * a)
            Attention.backward(dqkv: A + lane.dQkv, scratch: A + lane.scratch, dout: A + lane.dAttn,
                               probs: A + act.probs, qkv: A + act.qkv, batch: b, tokens: n,
                               heads: c.heads(inBlock: l), headDim: c.headDim, mode: pr)
            if keyGrad { accumulateKeyGradient(lane, heads: c.heads(inBlock: l)) }
            VectorOps.zero(A + lane.dLn, rows * d)
            linearBackward(.qkv, block: l, dx: A + lane.dLn, dy: A + lane.dQkv, x: A + act.ln1, params: P, grads: G, rows: rows,
                           mode: pr, sparse: sparse, fullWeightGradient: fullWeightGradient, scratch: scratch, threads: lane.threads)
            LayerNorm.backward(dx: dX, dweight: G + w.norm1Weight, dbias: G + w.norm1Bias, dy: A + lane.dLn,
                               x: A + act.xIn, mean: A + act.ln1Mean, rstd: A + act.ln1Rstd,
                               weight: P + w.norm1Weight, rows: rows, dim: d)
        }

        // The selector scatters the kept tokens' gradient back to all N and adds its own.
        var dX0 = dX, nFull = n
        if c.hasTokenSelector {
            selectorBackward(lane, params: P, grads: G, selection: selection, mode: pr.fp32)
            dX0 = A + lane.dX0
            nFull = c.tokens
        }
        // Embedding: x0[i] = [cls; patches_i·Wᵀ + bias] + pos
        for i in 0 ..< b {
            let dxi = dX0 + i * nFull * d
            VectorOps.accumulate(G + o.posEmbed, dxi, nFull * d)
            VectorOps.accumulate(G + o.clsToken, dxi, d)
            Bias.backward(db: G + o.patchBias, dy: dxi + d, rows: np, cols: d)
            // dW (D, C·p·p) += dEmb_iᵀ · patches_i
            MatMul.gemm(transA: true, transB: false, m: d, n: k, k: np, alpha: 1,
                       a: dxi + d, lda: d, b: A + lane.patches + i * np * k, ldb: k,
                       beta: 1, c: G + o.patchWeight, ldc: k, mode: pr.fp32)
            if let inputGrad {
                // dpatches (P, C·p·p) = dEmb_i · W, folded back onto the image
                MatMul.gemm(transA: false, transB: false, m: np, n: k, k: d, alpha: 1,
                           a: dxi + d, lda: d, b: P + o.patchWeight, ldb: k,
                           beta: 0, c: A + lane.dPatches, ldc: k, mode: pr.fp32)
                let img = inputGrad + i * c.imageValues
                VectorOps.zero(img, c.imageValues)
                Patchify.backward(img, A + lane.dPatches, batch: 1, channels: c.inChannels,
                                  imageSize: c.imageSize, patchSize: c.patchSize)
            }
        }
    }
}

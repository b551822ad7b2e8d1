import Core
import Foundation

/// The shape of a Vision Transformer (timm's `VisionTransformer` with class token,
/// pre-norm blocks, LayerNorm eps 1e-6 and exact GELU).
public struct ViTConfig: Codable, Hashable, Sendable, CustomStringConvertible {
    public var imageSize: Int
    public var patchSize: Int
    public var inChannels: Int
    public var numClasses: Int
    public var dim: Int
    public var depth: Int
    public var heads: Int
    public var mlpRatio: Double
    /// A compact (structurally pruned) model: how many attention heads each block keeps
    /// (nil: all `heads`). The head width stays dim / heads.
    public var blockHeads: [Int]?
    /// A compact model: each block's MLP hidden width (nil: all `hidden`).
    public var blockHidden: [Int]?
    /// SViTE+: the fraction of patch tokens a learnable top-k selector keeps before block
    /// 0 (nil: no selector; the blocks see every token).
    public var tokenKeep: Double?
    /// The selector's hidden width (0: a single linear layer, as the official code).
    public var selectorHidden: Int = 0

    /// timm's ViT LayerNorm epsilon.
    public static let layerNormEps: Float = 1e-6

    public init(imageSize: Int, patchSize: Int, inChannels: Int, numClasses: Int,
                dim: Int, depth: Int, heads: Int, mlpRatio: Double = 4) {
        self.imageSize = imageSize; self.patchSize = patchSize; self.inChannels = inChannels
        self.numClasses = numClasses; self.dim = dim; self.depth = depth; self.heads = heads
        self.mlpRatio = mlpRatio
    }

    // MARK: derived sizes

    public var gridSize: Int { imageSize / patchSize }
    public var numPatches: Int { gridSize * gridSize }
    /// Sequence length: CLS plus patches.
    public var tokens: Int { numPatches + 1 }
    public var headDim: Int { dim / heads }
    /// MLP hidden width, int(dim · mlp_ratio) as timm computes it.
    public var hidden: Int { Int(Double(dim) * mlpRatio) }
    /// Values in one flattened patch: C·p·p.
    public var patchDim: Int { inChannels * patchSize * patchSize }
    public var imageValues: Int { inChannels * imageSize * imageSize }

    public var hasTokenSelector: Bool { tokenKeep != nil }
    /// Patch tokens the selector keeps: round(token_keep · patches), at least 1.
    public var keptPatches: Int {
        guard let keep = tokenKeep else { return numPatches }
        return min(numPatches, max(1, Int((keep * Double(numPatches)).rounded())))
    }
    /// Sequence length inside the blocks: CLS plus the kept patches.
    public var blockTokens: Int { 1 + keptPatches }

    /// Heads block `l` computes (all of them unless the model is compact).
    @inlinable public func heads(inBlock l: Int) -> Int { blockHeads?[l] ?? heads }
    /// Width of block `l`'s attention output: kept heads × head width.
    @inlinable public func attentionWidth(inBlock l: Int) -> Int { heads(inBlock: l) * headDim }
    /// Block `l`'s MLP hidden width.
    @inlinable public func hidden(inBlock l: Int) -> Int { blockHidden?[l] ?? hidden }
    public var isCompact: Bool { blockHeads != nil || blockHidden != nil }
    /// The widest attention output and MLP hidden layer over the blocks (scratch sizes).
    public var maxAttentionWidth: Int { (0 ..< depth).map { attentionWidth(inBlock: $0) }.max() ?? 0 }
    public var maxHidden: Int { (0 ..< depth).map { hidden(inBlock: $0) }.max() ?? 0 }

    /// The same model with block `l` keeping `heads[l]` heads and `hidden[l]` neurons.
    public func compacted(heads kept: [Int], hidden keptHidden: [Int]) -> ViTConfig {
        var c = self
        c.blockHeads = kept
        c.blockHidden = keptHidden
        return c
    }

    /// Multiply-adds ×2 of one image's forward pass: the patch embedding, the four
    /// linear layers and the two attention products per block, and the head. The
    /// backward pass costs twice this (input and weight gradients).
    /// A compact model counts only the heads and neurons it keeps.
    public var forwardFLOPsPerImage: Double {
        let c = self
        let n = Double(c.blockTokens), d = Double(c.dim)
        let embed = 2 * Double(c.numPatches) * Double(c.patchDim) * d
        let h = Double(c.selectorHidden)
        let selector = c.hasTokenSelector ? 2 * Double(c.numPatches) * (h > 0 ? d * h + h : d) : 0
        let blocks = (0 ..< c.depth).reduce(0.0) { sum, l in
            let a = Double(c.attentionWidth(inBlock: l)), h = Double(c.hidden(inBlock: l))
            let linear = 2 * n * d * (3 * a + a + 2 * h)
            let attention = 2 * 2 * n * n * a
            return sum + linear + attention
        }
        let head = 2 * d * Double(c.numClasses)
        return embed + selector + blocks + head
    }

    public var description: String {
        var s = "ViT(image \(imageSize), patch \(patchSize), channels \(inChannels), classes \(numClasses), dim \(dim), depth \(depth), heads \(heads), mlp ratio \(mlpRatio)"
        if let h = blockHeads { s += ", block heads \(h)" }
        if let h = blockHidden { s += ", block hidden \(h)" }
        if let k = tokenKeep { s += ", token keep \(k) (\(keptPatches) of \(numPatches) patches), selector hidden \(selectorHidden)" }
        return s + ")"
    }

    /// Every impossible combination, each named by its YAML key.
    public func validate(file: String = "<config>", path: String = "model") throws {
        func fail(_ key: String, _ msg: String) -> ConfigError {
            ConfigError(file: file, key: path.isEmpty ? key : "\(path).\(key)", message: msg)
        }
        for (key, v) in [("image_size", imageSize), ("patch_size", patchSize), ("in_channels", inChannels),
                         ("num_classes", numClasses), ("dim", dim), ("depth", depth), ("heads", heads)] where v < 1 {
            throw fail(key, "must be at least 1, got \(v)")
        }
        if imageSize % patchSize != 0 {
            throw fail("patch_size", "\(patchSize) does not divide image_size \(imageSize)")
        }
        if dim % heads != 0 {
            throw fail("heads", "\(heads) does not divide dim \(dim)")
        }
        if !(mlpRatio > 0) || hidden < 1 {
            throw fail("mlp_ratio", "must give a hidden width of at least 1, got \(mlpRatio)")
        }
        if let k = tokenKeep, !(k > 0 && k <= 1) { throw fail("token_keep", "must be in (0, 1], got \(k)") }
        if selectorHidden < 0 { throw fail("selector_hidden", "must be at least 0 (0: linear), got \(selectorHidden)") }
        if selectorHidden > 0 && tokenKeep == nil { throw fail("selector_hidden", "sizes the token selector, which needs token_keep") }
        for (key, list, most) in [("block_heads", blockHeads, heads), ("block_hidden", blockHidden, hidden)] {
            guard let list else { continue }
            if list.count != depth { throw fail(key, "needs one entry per block (\(depth)), got \(list.count)") }
            if let bad = list.first(where: { $0 < 1 || $0 > most }) {
                throw fail(key, "entries must be between 1 and \(most), got \(bad)")
            }
        }
    }

    // MARK: presets

    /// Built-in shapes, mirrored by configs/NAME.yaml.
    public static let presets: [String: ViTConfig] = [
        "deit-tiny": ViTConfig(imageSize: 224, patchSize: 16, inChannels: 3, numClasses: 1000, dim: 192, depth: 12, heads: 3),
        "deit-small": ViTConfig(imageSize: 224, patchSize: 16, inChannels: 3, numClasses: 1000, dim: 384, depth: 12, heads: 6),
        "deit-base": ViTConfig(imageSize: 224, patchSize: 16, inChannels: 3, numClasses: 1000, dim: 768, depth: 12, heads: 12),
        "fmnist-tiny": ViTConfig(imageSize: 28, patchSize: 4, inChannels: 1, numClasses: 10, dim: 96, depth: 6, heads: 3),
        "fmnist-6head": ViTConfig(imageSize: 28, patchSize: 4, inChannels: 1, numClasses: 10, dim: 96, depth: 6, heads: 6),
    ]

    // MARK: YAML

}

extension ViTConfig: ConfigSection {
    public static let sectionName = "model"
    /// Every shape key is required; these zeros are never a model.
    public static var defaults: ViTConfig { ViTConfig(imageSize: 0, patchSize: 0, inChannels: 0, numClasses: 0, dim: 0, depth: 0, heads: 0) }

    /// Whole numbers in a list (`[2, 3, 3]`).
    static func wholeNumbers(_ key: String) -> @Sendable (ConfigMapping) throws -> [Int]? {
        { m in
            try m.doubles(key).map { list in
                try list.map { v in
                    guard v == v.rounded(), abs(v) < 1e9 else { throw m.error(key, "expected whole numbers, found \(v)") }
                    return Int(v)
                }
            }
        }
    }

    public static var keys: [ConfigKey<ViTConfig>] {
        [
            .value("image_size", \.imageSize, required: true),
            .value("patch_size", \.patchSize, required: true),
            .value("in_channels", \.inChannels, required: true),
            .value("num_classes", \.numClasses, required: true),
            .value("dim", \.dim, required: true),
            .value("depth", \.depth, required: true),
            .value("heads", \.heads, required: true),
            .value("mlp_ratio", \.mlpRatio),
            ConfigKey("block_heads", read: { m, c in c.blockHeads = try wholeNumbers("block_heads")(m) },
                      write: { $0.blockHeads.map { "\($0)" } }),
            ConfigKey("block_hidden", read: { m, c in c.blockHidden = try wholeNumbers("block_hidden")(m) },
                      write: { $0.blockHidden.map { "\($0)" } }),
            .optional("token_keep", \.tokenKeep),
            // The selector's width means something only with a selector.
            ConfigKey("selector_hidden", read: { m, c in c.selectorHidden = try m.int("selector_hidden") ?? c.selectorHidden },
                      write: { $0.tokenKeep == nil ? nil : "\($0.selectorHidden)" }),
        ]
    }

    public func check(_ m: ConfigMapping) throws { try validate(file: m.file, path: m.path) }
}

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

    public var description: String {
        "ViT(image \(imageSize), patch \(patchSize), channels \(inChannels), classes \(numClasses), dim \(dim), depth \(depth), heads \(heads), mlp ratio \(mlpRatio))"
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
    }

    // MARK: presets

    /// Built-in shapes, mirrored by configs/NAME.yaml.
    public static let presets: [String: ViTConfig] = [
        "deit-tiny": ViTConfig(imageSize: 224, patchSize: 16, inChannels: 3, numClasses: 1000, dim: 192, depth: 12, heads: 3),
        "deit-small": ViTConfig(imageSize: 224, patchSize: 16, inChannels: 3, numClasses: 1000, dim: 384, depth: 12, heads: 6),
        "deit-base": ViTConfig(imageSize: 224, patchSize: 16, inChannels: 3, numClasses: 1000, dim: 768, depth: 12, heads: 12),
        "fmnist-tiny": ViTConfig(imageSize: 28, patchSize: 4, inChannels: 1, numClasses: 10, dim: 96, depth: 6, heads: 3),
    ]

    // MARK: YAML

    /// Reads the `model:` section; every key is required to be known.
    public static func parse(_ m: ConfigMapping) throws -> ViTConfig {
        func req(_ key: String) throws -> Int {
            guard let v = try m.int(key) else {
                throw ConfigError(file: m.file, key: m.qualified(key), message: "missing (required)")
            }
            return v
        }
        let c = ViTConfig(imageSize: try req("image_size"), patchSize: try req("patch_size"),
                          inChannels: try req("in_channels"), numClasses: try req("num_classes"),
                          dim: try req("dim"), depth: try req("depth"), heads: try req("heads"),
                          mlpRatio: try m.double("mlp_ratio") ?? 4)
        try m.finish()
        try c.validate(file: m.file, path: m.path)
        return c
    }

    /// The `model:` section as YAML lines (two-space indented), for config files and
    /// the JSON/YAML written beside exported weights.
    public var yaml: String {
        """
        model:
          image_size: \(imageSize)
          patch_size: \(patchSize)
          in_channels: \(inChannels)
          num_classes: \(numClasses)
          dim: \(dim)
          depth: \(depth)
          heads: \(heads)
          mlp_ratio: \(mlpRatio)

        """
    }
}

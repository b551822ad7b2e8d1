import Model

/// The `sparsity:` section of a run config.
public struct SparsityConfig: Sendable, Equatable, Codable {
    public enum Method: String, Sendable, Codable, CaseIterable {
        /// No masks.
        case dense
        /// SViTE: random ERK topology, prune-and-grow every `update_interval` steps.
        case svite
    }

    public var method: Method = .dense
    /// Fraction of the prunable weights that are inactive (0.5 = 50% sparsity).
    public var sparsity: Double = 0.5
    public var distribution: SparsityDistribution = .erk
    public var updateInterval: Int = 100
    public var endFraction: Double = 0.8
    public var initialFraction: Double = 0.5
    public var decay: UpdateSchedule.Decay = .paper
    /// Also sparsify the patch embedding and the head (the official code does).
    public var includeEmbeddingAndHead = false
    /// c: at an update step each worker sends its top c·k inactive gradients per layer.
    public var candidateMultiplier: Int = 2

    public init() {}

    public var isSparse: Bool { method != .dense }
    public var density: Double { 1 - sparsity }
    public var schedule: UpdateSchedule {
        UpdateSchedule(interval: updateInterval, endFraction: endFraction, initialFraction: initialFraction, decay: decay)
    }

    public static func parse(_ m: ConfigMapping?) throws -> SparsityConfig {
        var c = SparsityConfig()
        guard let m else { return c }
        func pick<T: RawRepresentable & CaseIterable>(_ key: String, _: T.Type) throws -> T? where T.RawValue == String {
            guard let s = try m.string(key) else { return nil }
            guard let v = T(rawValue: s) else {
                throw m.error(key, "unknown value '\(s)'; known: \(T.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return v
        }
        c.method = try pick("method", Method.self) ?? c.method
        c.sparsity = try m.double("sparsity") ?? c.sparsity
        c.distribution = try pick("distribution", SparsityDistribution.self) ?? c.distribution
        c.updateInterval = try m.int("update_interval") ?? c.updateInterval
        c.endFraction = try m.double("end_fraction") ?? c.endFraction
        c.initialFraction = try m.double("initial_fraction") ?? c.initialFraction
        c.decay = try pick("decay", UpdateSchedule.Decay.self) ?? c.decay
        c.includeEmbeddingAndHead = try m.bool("include_embedding_and_head") ?? c.includeEmbeddingAndHead
        c.candidateMultiplier = try m.int("candidate_multiplier") ?? c.candidateMultiplier
        try m.finish()
        guard c.candidateMultiplier >= 1 && c.candidateMultiplier <= 1_000_000 else {
            throw m.error("candidate_multiplier", "must be at least 1, got \(c.candidateMultiplier)")
        }
        guard c.sparsity >= 0 && c.sparsity < 1 else { throw m.error("sparsity", "must be in [0, 1), got \(c.sparsity)") }
        guard c.updateInterval >= 1 else { throw m.error("update_interval", "must be at least 1, got \(c.updateInterval)") }
        guard c.endFraction > 0 && c.endFraction <= 1 else { throw m.error("end_fraction", "must be in (0, 1], got \(c.endFraction)") }
        guard c.initialFraction >= 0 && c.initialFraction <= 1 else { throw m.error("initial_fraction", "must be in [0, 1], got \(c.initialFraction)") }
        return c
    }

    public var yaml: String {
        """
        sparsity:
          method: \(method.rawValue)
          sparsity: \(sparsity)
          distribution: \(distribution.rawValue)
          update_interval: \(updateInterval)
          end_fraction: \(endFraction)
          initial_fraction: \(initialFraction)
          decay: \(decay.rawValue)
          include_embedding_and_head: \(includeEmbeddingAndHead)
          candidate_multiplier: \(candidateMultiplier)

        """
    }
}

/// Parameters and FLOPs of a masked model, in the paper's terms.
public struct SparsityReport: Sendable, Equatable {
    public var density: Double
    /// Active parameters: every non-prunable parameter plus the active prunable ones.
    public var activeParameters: Int
    public var totalParameters: Int
    public var denseFLOPs: Double
    public var sparseFLOPs: Double
    public var explorationRate: Double
    public var maskVersion: Int
    public var flopsSaving: Double { 1 - sparseFLOPs / denseFLOPs }

    /// Linear layers scale with their density; attention products, norms and the rest do
    /// not. Per image, forward: a block linear runs on every token, the patch embedding on
    /// every patch, the head on CLS only.
    public init(masks: MaskSet, model: ViTModel) {
        let c = model.config
        density = masks.density
        totalParameters = masks.layout.parameterCount
        activeParameters = totalParameters - masks.totalPrunable + masks.activePrunable
        denseFLOPs = model.forwardFLOPsPerImage
        var removed = 0.0
        for t in masks.prunable {
            let rows: Double = t.name.hasPrefix("blocks.") ? Double(c.tokens) : (t.name == "head.weight" ? 1 : Double(c.numPatches))
            removed += 2 * rows * Double(t.count - masks.activeCount(t))
        }
        sparseFLOPs = denseFLOPs - removed
        explorationRate = masks.explorationRate
        maskVersion = masks.version
    }
}

extension MaskSet {
    /// The starting topology of a run: the configured per-layer counts drawn at random
    /// from `seed` (nil for dense runs). Training and the pictures draw it the same way.
    public static func initial(_ c: SparsityConfig, layout: ParameterLayout, seed: UInt64) -> MaskSet? {
        guard c.isSparse else { return nil }
        let m = MaskSet(layout: layout, prunable: MaskSet.prunableTensors(layout, includeEmbeddingAndHead: c.includeEmbeddingAndHead))
        m.randomize(counts: c.distribution.counts(m.prunable.map { ($0.name, $0.shape) }, density: c.density), seed: seed)
        return m
    }
}

import Foundation
import Model
import Yams

/// A list of variants of one base config, run one after another into
/// runs/experiments/NAME/VARIANT and summarised as a table in the paper's form.
public struct Experiment: Sendable {
    public struct Variant: Sendable {
        public var name: String
        public var overrides: [String]
        /// A directory-safe form of the name.
        public var slug: String {
            String(name.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" }).replacingOccurrences(of: "--", with: "-")
                .trimmingCharacters(in: CharacterSet(charactersIn: "-"))
        }
    }

    public var name: String
    public var base: String
    public var common: [String]
    public var variants: [Variant]
    public var file: String

    public static func load(_ path: String) throws -> Experiment {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(file: path, key: "", message: "cannot read the file")
        }
        let root = try ConfigMapping.parse(yaml: text, file: path)
        let name = try root.string("name") ?? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        guard let base = try root.string("base") else { throw root.error("base", "missing (required): the config the variants start from") }
        let common = try strings(root, "set")
        guard let list = try root.mappings("variants"), !list.isEmpty else { throw root.error("variants", "missing or empty") }
        var variants: [Variant] = []
        for v in list {
            guard let vname = try v.string("name") else { throw v.error("name", "missing (required)") }
            variants.append(Variant(name: vname, overrides: try strings(v, "set")))
            try v.finish()
        }
        try root.finish()
        let slugs = variants.map(\.slug)
        if Set(slugs).count != slugs.count { throw root.error("variants", "two variants have the same name") }
        return Experiment(name: name, base: base, common: common, variants: variants, file: path)
    }

    static func strings(_ m: ConfigMapping, _ key: String) throws -> [String] {
        guard let items = try m.scalars(key) else { return [] }
        return items
    }

    /// Each variant's config, checked before anything runs.
    public func configs() throws -> [RunConfig] {
        try variants.map { v in
            var c = try RunConfig.resolve(base, overrides: common + v.overrides)
            c.name = "\(name)/\(v.slug)"
            try c.checkData()
            return c
        }
    }

    public func runDirectory(_ v: Variant, root: String = "runs/experiments") -> String { "\(root)/\(name)/\(v.slug)" }

    /// Finished: the run's metrics end with an `end` record.
    public static func isFinished(_ dir: String) -> Bool {
        MetricsLog.read("\(dir)/metrics.jsonl").last?["kind"] as? String == "end"
    }

    /// The result row of a finished run.
    public static func result(variant: Variant, dir: String) throws -> [String: Any] {
        let w = try LoadedWeights.load(dir)
        let records = MetricsLog.read("\(dir)/metrics.jsonl")
        let evals = records.filter { $0["kind"] as? String == "eval" }
        let model = ViTModel(config: w.config.model)
        var row: [String: Any] = ["variant": variant.name, "directory": dir, "steps": w.step ?? 0,
                                  "parameters": model.layout.parameterCount,
                                  "top1": (evals.last?["eval_accuracy"] as? Double) ?? 0,
                                  "eval_loss": (evals.last?["eval_loss"] as? Double) ?? 0,
                                  "seconds": (records.last?["elapsed_seconds"] as? Double) ?? 0,
                                  "active_parameters": model.layout.parameterCount, "flops_saving": 0.0,
                                  "flops": model.forwardFLOPsPerImage, "density": 1.0,
                                  "tokens": w.config.model.blockTokens]
        if let s = w.sparsityReport { row.merge(s.fields) { $1 } }
        return row
    }

    /// The paper's table (model, sparsity (#params), FLOPs saving, top-1) as Markdown,
    /// with the training time and its saving against the dense variant (the first
    /// finished row at the dense parameter and FLOP count).
    public func table(rows: [[String: Any]], denseParameters: Int, denseFLOPs: Double) -> String {
        var s = "| Model | Sparsity (#Para.) | #Tokens | FLOPs saving | Top-1 (%) | time | time saving |\n|---|---|---|---|---|---|---|\n"
        let dense = rows.first { ($0["active_parameters"] as? Int) == denseParameters && ($0["flops"] as? Double) == denseFLOPs }
        let denseSeconds = dense?["seconds"] as? Double
        for v in variants {
            guard let r = rows.first(where: { $0["variant"] as? String == v.name }) else {
                s += "| \(v.name) | – | – | – | not run yet | | |\n"
                continue
            }
            let active = r["active_parameters"] as? Int ?? 0
            let sparsity = 1 - Double(active) / Double(denseParameters)
            let flops = r["flops"] as? Double ?? denseFLOPs
            let seconds = r["seconds"] as? Double ?? 0
            let saving = denseSeconds.map { String(format: "%.1f%%", (1 - seconds / $0) * 100) } ?? "–"
            s += String(format: "| %@ | %.1f%% (%.2fM) | %d | %.1f%% | %.2f | %@ | %@ |\n", v.name as NSString, max(0, sparsity) * 100,
                        Double(active) / 1e6, r["tokens"] as? Int ?? 0, (1 - flops / denseFLOPs) * 100, (r["top1"] as? Double ?? 0) * 100,
                        Self.duration(seconds) as NSString, saving as NSString)
        }
        return s
    }

    static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        return String(format: "%d:%02d", t / 60, t % 60)
    }
}

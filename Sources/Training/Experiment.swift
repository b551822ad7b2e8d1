import Config
import Core
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

    /// One training run: a variant at one seed (nil: the config's own seed, no seed level).
    public struct Run: Sendable {
        public var variant: Variant
        public var seed: UInt64?
    }

    public var name: String
    public var base: String
    public var common: [String]
    public var variants: [Variant]
    /// `seeds:` every variant runs once per seed (training.seed), seed by seed, so the
    /// first seed of every variant finishes before the second starts.
    public var seeds: [UInt64] = []
    public var file: String

    /// Every run, seed-major.
    public var runs: [Run] {
        seeds.isEmpty ? variants.map { Run(variant: $0, seed: nil) }
            : seeds.flatMap { s in variants.map { Run(variant: $0, seed: s) } }
    }

    public static func load(_ path: String) throws -> Experiment {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(file: path, key: "", message: "cannot read the file")
        }
        let root = try ConfigMapping.parse(yaml: text, file: path)
        let name = try root.string("name") ?? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        guard let base = try root.string("base") else { throw root.error("base", "missing (required): the config the variants start from") }
        let common = try strings(root, "set")
        var seeds: [UInt64] = []
        for s in try strings(root, "seeds") {
            guard let v = UInt64(s) else { throw root.error("seeds", "expected whole numbers >= 0, got '\(s)'") }
            seeds.append(v)
        }
        if Set(seeds).count != seeds.count { throw root.error("seeds", "a seed is listed twice") }
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
        return Experiment(name: name, base: base, common: common, variants: variants, seeds: seeds, file: path)
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

    public func runDirectory(_ r: Run, root: String = "runs/experiments") -> String {
        runDirectory(r.variant, root: root) + (r.seed.map { "/seed-\($0)" } ?? "")
    }

    /// A run's config: its variant's, at the run's seed.
    public func config(_ r: Run, variantConfig: RunConfig) -> RunConfig {
        var c = variantConfig
        if let s = r.seed { c.training.seed = s }
        return c
    }

    /// A run's identity in the results file: FNV-1a over its effective config (every
    /// default written out), so a recorded row stands for this run only while the config
    /// that made it is the one the experiment would run now.
    /// A run that does not compress leaves out its whole `communication:` section: no key
    /// there changes what it computes, and a default that moves (dense_below 0 → 8192)
    /// must not repeat its runs.
    public static func fingerprint(_ c: RunConfig) -> String {
        // gradient_density auto sends every value in one process and through local workers.
        let compresses = (c.communication.gradientDensity ?? 1) < 1 || (c.communication.denseValues ?? .fp32) != .fp32
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        var section = ""
        let text = c.yaml.split(separator: "\n", omittingEmptySubsequences: false).filter { line in
            if let first = line.first, first != " ", first != "#", line.hasSuffix(":") { section = String(line.dropLast()) }
            // (The text's final empty line stays, as it always did.)
            if section == "communication" && !compresses && !line.isEmpty { return false }
            return !fingerprintNeutralLines.contains(String(line))
        }.joined(separator: "\n")
        for b in text.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        return String(h, radix: 16)
    }

    /// Keys added after runs were recorded, at the defaults that change nothing a finite
    /// run computes: left out of the fingerprint, so those rows still stand. (The sparse
    /// kernels compute the same products to fp32 rounding, where they are faster.)
    static let fingerprintNeutralLines: Set<String> = [
        "  sparse_kernels: auto",
        "  on_nonfinite: stop", "  max_skipped_steps: 10",
        "communication:", "  gradient_density: auto", "  dense_values: auto",
        "  dense_warmup_epochs: auto", "  freeze_variance: auto",
        "  downlink: auto", "  checksum_every_steps: 50", "  dense_vectors: true", "  rank_by: update", "  dense_below: 8192", "  values: int8",
        "  feedback: residual", "  density_warmup_epochs: 1.0", "  topk_scope: tensor", "  small_tensor_density: 1.0",
        "  crop_pct: 0.875", "  prefetch: true",
    ]

    /// The rows of an earlier results file (NAME.json), which outlive the run directories:
    /// a run whose row is recorded there with its current fingerprint counts as finished
    /// even when runs/ is gone (a new machine, a cleaned disk). A missing file is no rows;
    /// an unreadable one is an error that names it, since rewriting it would lose them.
    public static func recordedRows(_ path: String) throws -> [[String: Any]] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        guard let doc = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let rows = doc["rows"] as? [[String: Any]] else {
            throw ConfigError(file: path, key: "rows", message: "not a results file of `svite experiment` (move it away to start the table afresh)")
        }
        return rows
    }

    /// The `step_timing` of an earlier results file (from `--time-steps`), if any.
    public static func recordedStepTiming(_ path: String) throws -> [String: Any]? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        guard let doc = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ConfigError(file: path, key: "step_timing", message: "not a results file of `svite experiment` (move it away to start the table afresh)")
        }
        return doc["step_timing"] as? [String: Any]
    }

    /// Puts `timing` into the results file as its `step_timing`, keeping its rows.
    public static func writeStepTiming(_ timing: [String: Any], to path: String) throws {
        var doc: [String: Any] = [:]
        if let data = FileManager.default.contents(atPath: path) {
            guard let d = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw ConfigError(file: path, key: "", message: "not a results file of `svite experiment` (move it away to start the table afresh)")
            }
            doc = d
        }
        doc["step_timing"] = timing
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try AtomicFile.write(path, data: try JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys, .prettyPrinted]))
    }

    /// The recorded row of a run, if its fingerprint matches.
    public func recorded(_ r: Run, fingerprint: String, in rows: [[String: Any]]) -> [String: Any]? {
        rows.first { row in
            row["variant"] as? String == r.variant.name && (row["seed"] as? Int).map(UInt64.init) == r.seed
                && row["config_hash"] as? String == fingerprint
        }
    }

    /// Finished: the run's metrics end with an `end` record.
    public static func isFinished(_ dir: String) -> Bool {
        MetricsLog.read("\(dir)/metrics.jsonl").last?.kind == .end
    }

    /// The result row of a finished run.
    public static func result(variant: Variant, dir: String) throws -> [String: Any] {
        let w = try LoadedWeights.load(dir)
        let records = MetricsLog.read("\(dir)/metrics.jsonl")
        let evals = records.filter { $0.kind == .eval }
        let model = ViTModel(config: w.config.model)
        var row: [String: Any] = ["variant": variant.name, "directory": dir, "steps": w.step ?? 0,
                                  "parameters": model.layout.parameterCount,
                                  "top1": evals.last?.evalAccuracy ?? 0,
                                  "eval_loss": evals.last?.evalLoss ?? 0,
                                  "seconds": records.last?.elapsedSeconds ?? 0,
                                  "active_parameters": model.layout.parameterCount, "flops_saving": 0.0,
                                  "flops": model.forwardFLOPsPerImage, "density": 1.0,
                                  "tokens": w.config.model.blockTokens]
        if let cpu = records.last?.cpuSeconds { row["cpu_seconds"] = cpu }
        row["config_hash"] = fingerprint(w.config)
        if let s = w.sparsityReport { row.merge(s.fields) { $1 } }
        return row
    }

    /// The paper's table (model, sparsity (#params), FLOPs saving, top-1) as Markdown, with
    /// top-1 as mean ± standard deviation over the finished seeds, the mean training time
    /// and its saving against the dense variant (the first variant at the dense parameter
    /// and FLOP count) in CPU seconds where the rows record them.
    /// `stepTiming`: per variant name, `ms` and `saving` of one training step timed in turn
    /// with the others (`--time-steps`); where given, the step columns replace the CPU-second
    /// saving, which depends on what else the machine did.
    public func table(rows: [[String: Any]], denseParameters: Int, denseFLOPs: Double, stepTiming: [String: Any]? = nil) -> String {
        var s = stepTiming == nil
            ? "| Model | Sparsity (#Para.) | #Tokens | FLOPs saving | Top-1 (%) | seeds | time | time saving |\n|---|---|---|---|---|---|---|---|\n"
            : "| Model | Sparsity (#Para.) | #Tokens | FLOPs saving | Top-1 (%) | seeds | time | step ms | time saving (step) |\n|---|---|---|---|---|---|---|---|---|\n"
        func rowsOf(_ v: Variant) -> [[String: Any]] { rows.filter { $0["variant"] as? String == v.name } }
        func meanSeconds(_ rs: [[String: Any]], _ key: String = "seconds") -> Double? {
            let xs = rs.compactMap { $0[key] as? Double }
            return xs.isEmpty ? nil : xs.reduce(0, +) / Double(xs.count)
        }
        let denseVariant = variants.first { v in
            rowsOf(v).first.map { ($0["active_parameters"] as? Int) == denseParameters && ($0["flops"] as? Double) == denseFLOPs } ?? false
        }
        let denseSeconds = denseVariant.flatMap { meanSeconds(rowsOf($0)) }
        let denseCPU = denseVariant.flatMap { meanSeconds(rowsOf($0), "cpu_seconds") }
        let planned = max(seeds.count, 1)
        for v in variants {
            let rs = rowsOf(v)
            guard let r = rs.first else {
                s += "| \(v.name) | – | – | – | not run yet | 0/\(planned) | |\(stepTiming == nil ? "" : " |") |\n"
                continue
            }
            let active = r["active_parameters"] as? Int ?? 0
            let sparsity = 1 - Double(active) / Double(denseParameters)
            let flops = r["flops"] as? Double ?? denseFLOPs
            let top1 = rs.map { ($0["top1"] as? Double ?? 0) * 100 }
            let (mean, sd) = Self.meanAndDeviation(top1)
            let seconds = meanSeconds(rs) ?? 0
            // CPU time where both sides have it (it does not move when the cores are shared),
            // else wall time, marked.
            let saving: String
            var stepColumn = ""
            if let timing = stepTiming {
                if let t = timing[v.name] as? [String: Any], let ms = t["ms"] as? Double, let sv = t["saving"] as? Double {
                    stepColumn = String(format: "%.1f | ", ms)
                    saving = String(format: "%.1f%%", sv * 100)
                } else {
                    stepColumn = "– | "
                    saving = "not timed"
                }
            } else if let cpu = meanSeconds(rs, "cpu_seconds"), let d = denseCPU {
                saving = String(format: "%.1f%%", (1 - cpu / d) * 100)
            } else if let d = denseSeconds {
                saving = String(format: "%.1f%% (wall)", (1 - seconds / d) * 100)
            } else {
                saving = "–"
            }
            let accuracy = top1.count > 1 ? String(format: "%.2f ± %.2f", mean, sd) : String(format: "%.2f", mean)
            s += String(format: "| %@ | %.1f%% (%.2fM) | %d | %.1f%% | %@ | %d/%d | %@ | %@%@ |\n", v.name as NSString, max(0, sparsity) * 100,
                        Double(active) / 1e6, r["tokens"] as? Int ?? 0, (1 - flops / denseFLOPs) * 100, accuracy as NSString,
                        rs.count, planned, Self.duration(seconds) as NSString, stepColumn as NSString, saving as NSString)
        }
        return s
    }

    /// Mean and sample standard deviation (0 for a single value).
    public static func meanAndDeviation(_ xs: [Double]) -> (mean: Double, deviation: Double) {
        guard !xs.isEmpty else { return (0, 0) }
        let mean = xs.reduce(0, +) / Double(xs.count)
        guard xs.count > 1 else { return (mean, 0) }
        let v = xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(xs.count - 1)
        return (mean, v.squareRoot())
    }

    static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        return String(format: "%d:%02d", t / 60, t % 60)
    }
}

import Config
import Core
import Datasets
import Foundation
import Model
import Optim
import Sparsity
import Testing
import TestSupport
@testable import Training

@Suite("configs")
struct ConfigTests {
    static let repoConfigs = "\(repoRoot)/configs"

    @Test(arguments: ["deit-tiny", "deit-small", "deit-base", "fmnist-tiny", "fmnist-6head"])
    func presetFilesMatchBuiltInShapes(name: String) throws {
        let c = try RunConfig.load(path: "\(Self.repoConfigs)/\(name).yaml")
        #expect(c.model == ViTConfig.presets[name])
        #expect(c.name == name)
    }

    @Test func builtInConfigsEqualTheRepositoryFiles() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.repoConfigs).filter { $0.hasSuffix(".yaml") }
        #expect(Set(files.map { String($0.dropLast(5)) }) == Set(BuiltinConfigs.all.keys),
                "configs/ and BuiltinConfigs differ: run deploy/embed-configs.sh")
        for f in files {
            let text = try String(contentsOfFile: "\(Self.repoConfigs)/\(f)", encoding: .utf8)
            #expect(BuiltinConfigs.all[String(f.dropLast(5))]?.trimmingCharacters(in: .whitespacesAndNewlines)
                        == text.trimmingCharacters(in: .whitespacesAndNewlines), "\(f) changed: run deploy/embed-configs.sh")
        }
    }

    @Test func referenceRecipeIsWhatTheIssueStates() throws {
        let c = try RunConfig.resolve("fmnist-tiny", searchDirectory: "/nonexistent")
        #expect(c.optimizer.kind == .adamw && c.optimizer.lr == 1e-3 && c.optimizer.weightDecay == 0.05)
        #expect(c.training.batchSize == 128 && c.training.epochs == 7 && c.training.labelSmoothing == 0.1)
        #expect(c.schedule.warmupEpochs == 1 && c.schedule.kind == .cosine)
        #expect(c.data.augmentation == DataConfig.Augmentation(cropPadding: 2, horizontalFlip: true))
    }

    @Test func resolvesPathsNamesAndBuiltIns() throws {
        #expect(try RunConfig.resolve("fmnist-tiny", searchDirectory: Self.repoConfigs).model.dim == 96)
        #expect(try RunConfig.resolve("default", searchDirectory: "/nonexistent").source == "<built-in default>")
        #expect(try RunConfig.resolve("\(Self.repoConfigs)/deit-small.yaml").model.dim == 384)
        #expect(throws: ConfigError.self) { try RunConfig.resolve("no-such-config", searchDirectory: "/nonexistent") }
    }

    @Test func effectiveYAMLParsesBackToTheSameConfig() throws {
        for name in BuiltinConfigs.all.keys {
            var a = try RunConfig.resolve(name, searchDirectory: "/nonexistent")
            var b = try RunConfig.parse(yaml: a.yaml, file: "round-trip")
            a.source = ""; b.source = ""
            #expect(a == b, "\(name)")
        }
    }

    func parse(_ yaml: String, overrides: [String] = []) throws -> RunConfig {
        try withTemporaryDirectory { dir in
            let path = "\(dir)/bad.yaml"
            try yaml.write(toFile: path, atomically: true, encoding: .utf8)
            let c = try RunConfig.load(path: path, overrides: overrides)
            try c.checkData()
            return c
        }
    }

    func expectError(_ yaml: String, overrides: [String] = [], key: String, containing text: String,
                     file: String = "bad.yaml", sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try parse(yaml, overrides: overrides)
            Issue.record("expected an error for key \(key)", sourceLocation: sourceLocation)
        } catch let e as ConfigError {
            #expect(e.key == key, "\(e)", sourceLocation: sourceLocation)
            #expect(e.description.contains(text), "\(e)", sourceLocation: sourceLocation)
            #expect(e.file.contains(file), "\(e)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    let good = "model:\n  image_size: 28\n  patch_size: 4\n  in_channels: 1\n  num_classes: 10\n  dim: 96\n  depth: 6\n  heads: 3\n"

    /// A config with several problems names them all in one error, section by section, each
    /// with its key (a user fixes them in one go instead of one run per typo).
    @Test func everyProblemIsReportedAtOnce() throws {
        let yaml = good + "  hedas: 2\ntraining:\n  epohcs: 3\n  batch_size: many\noptimiser: {}\n"
        do {
            _ = try parse(yaml)
            Issue.record("expected an error")
        } catch let e as ConfigError {
            #expect(e.all.map(\.key) == ["model.hedas", "training.batch_size", "training.epohcs", "optimiser"], "\(e)")
            let lines = e.description.split(separator: "\n")
            #expect(lines.count == 4 && lines[0].contains("did you mean 'heads'") && lines[1].contains("expected an integer")
                     && lines[2].contains("did you mean 'epochs'") && lines[3].contains("did you mean 'optimizer'"), "\(e)")
        }
        // Overrides keep their own label when several problems are reported.
        do {
            _ = try parse(good + "training:\n  epohcs: 3\n", overrides: ["sparsity.sparsty=0.5"])
            Issue.record("expected an error")
        } catch let e as ConfigError {
            #expect(e.all.count == 2 && e.all[0].file.contains("bad.yaml") && e.all[1].file.hasPrefix("--set"), "\(e)")
        }
    }

    @Test func badModelSectionIsNamed() throws {
        #expect(try parse(good).model == ViTConfig.presets["fmnist-tiny"])
        expectError(good + "  hedas: 2\n", key: "model.hedas", containing: "did you mean 'heads'")
        expectError(good + "optimiser: {}\n", key: "optimiser", containing: "did you mean 'optimizer'")
        expectError(good.replacingOccurrences(of: "heads: 3", with: "heads: 5"), key: "model.heads", containing: "does not divide dim 96")
        expectError(good.replacingOccurrences(of: "patch_size: 4", with: "patch_size: 5"), key: "model.patch_size", containing: "does not divide image_size 28")
        expectError(good.replacingOccurrences(of: "dim: 96", with: "dim: ninety"), key: "model.dim", containing: "expected an integer")
        expectError(good.replacingOccurrences(of: "depth: 6", with: "depth: 0"), key: "model.depth", containing: "at least 1")
        expectError(good.replacingOccurrences(of: "  depth: 6\n", with: ""), key: "model.depth", containing: "missing")
        expectError(good.replacingOccurrences(of: "dim: 96", with: "dim: [96]"), key: "model.dim", containing: "single value")
        expectError("name: x\n", key: "model", containing: "missing")
        expectError("model: [1, 2]\n", key: "model", containing: "mapping")
        expectError("model:\n  dim: 1\n  dim: 2\n", key: "", containing: "YAML")
    }

    @Test func theCommunicationSectionIsCheckedAndNamed() throws {
        let c = try parse(good + "communication:\n  gradient_density: 0.01\n  dense_warmup_epochs: 0.5\n  downlink: weights\n").communication
        #expect(c.denseWarmupEpochs == 0.5 && !c.replicatesUpdates && c.freezeVariance == .auto)
        let auto = try parse(good + "communication:\n  gradient_density: 0.01\n").communication
        #expect(auto.denseWarmupEpochs == nil && auto.replicatesUpdates)
        #expect(try RunConfig.parse(yaml: try parse(good + "communication:\n  dense_warmup_epochs: 2\n").yaml, file: "x").communication.denseWarmupEpochs == 2)
        expectError(good + "communication:\n  dense_warmup_epochs: soon\n", key: "communication.dense_warmup_epochs", containing: "auto or a number")
        expectError(good + "communication:\n  dense_warmup_epochs: -1\n", key: "communication.dense_warmup_epochs", containing: ">= 0")
        expectError(good + "communication:\n  downlink: both\n", key: "communication.downlink", containing: "auto, weights, updates")
        expectError(good + "communication:\n  freeze_variance: yes\n", key: "communication.freeze_variance", containing: "auto, on, off")
        expectError(good + "communication:\n  checksum_every_steps: 0\n", key: "communication.checksum_every_steps", containing: "at least 1")
    }

    @Test func badTrainingSectionsAreNamed() throws {
        expectError(good + "training:\n  epohcs: 3\n", key: "training.epohcs", containing: "did you mean 'epochs'")
        expectError(good + "training:\n  batch_size: 0\n", key: "training.batch_size", containing: "at least 1")
        expectError(good + "training:\n  label_smoothing: 1.5\n", key: "training.label_smoothing", containing: "[0, 1)")
        expectError(good + "training:\n  epochs: 0\n", key: "training.epochs", containing: "nothing to train")
        expectError(good + "optimizer:\n  lr: fast\n", key: "optimizer.lr", containing: "expected a number")
        expectError(good + "optimizer:\n  name: adam\n", key: "optimizer.name", containing: "adamw, sgd")
        expectError(good + "optimizer:\n  betas: [0.9]\n", key: "optimizer.betas", containing: "two numbers")
        expectError(good + "optimizer:\n  nesterov: true\n", key: "optimizer.nesterov", containing: "sgd")
        expectError(good + "schedule:\n  name: step\n", key: "schedule.name", containing: "cosine, constant")
        expectError(good + "data:\n  dataset: imagenet\n", key: "data.dataset", containing: "fashion-mnist, mnist, cifar10")
        expectError(good + "data:\n  mean: [0.1, 0.2]\n", key: "data.mean", containing: "1 channel(s)")
        expectError(good + "data:\n  std: [0]\n", key: "data.std", containing: "positive")
        expectError(good + "data:\n  augmentation: lots\n", key: "data.augmentation", containing: "'none' or a mapping")
        expectError(good + "data:\n  augmentation: {random_crop: 2}\n", key: "data.augmentation.random_crop", containing: "known keys here: cutmix, horizontal_flip, mix_prob, mix_switch_prob, mixup, random_crop_padding, random_resized_crop")
        expectError(good + "sparsity:\n  method: rigl\n", key: "sparsity.method", containing: "dense, svite")
        expectError(good + "sparsity:\n  sparsity: 1\n", key: "sparsity.sparsity", containing: "[0, 1)")
        expectError(good + "sparsity:\n  update_interval: 0\n", key: "sparsity.update_interval", containing: "at least 1")
        expectError(good + "sparsity:\n  distribution: normal\n", key: "sparsity.distribution", containing: "erk, uniform")
        // Structured settings, compact models and the token selector.
        expectError(good + "sparsity:\n  method: svite\n  head_density: 0.5\n", key: "sparsity.head_density", containing: "only s2vite and ssp")
        expectError(good + "sparsity:\n  method: s2vite\n  mlp_density: 0\n", key: "sparsity.mlp_density", containing: "(0, 1]")
        expectError(good + "  block_heads: [2, 2, 2, 2, 2, 2]\nsparsity:\n  method: s2vite\n", key: "sparsity.method", containing: "compact already")
        expectError(good + "  block_hidden: [100, 100]\n", key: "model.block_hidden", containing: "one entry per block")
        expectError(good + "  token_keep: 1.5\n", key: "model.token_keep", containing: "(0, 1]")
        expectError(good + "  selector_hidden: 8\n", key: "model.selector_hidden", containing: "needs token_keep")
        expectError(good + "training:\n  selector_tau_end: 0\n", key: "training.selector_tau_end", containing: "> 0")
        let plus = try parse(good + "  token_keep: 0.9\n  selector_hidden: 8\nsparsity:\n  method: s2vite\n  head_density: 0.67\n")
        #expect(plus.model.blockTokens == 45 && plus.sparsity.keptHeadFraction == 0.67 && plus.sparsity.keptNeuronFraction == 0.5)
        var back = try parse(plus.yaml)
        back.source = plus.source
        #expect(back == plus)
        expectError(good.replacingOccurrences(of: "in_channels: 1", with: "in_channels: 3"), key: "model.in_channels",
                    containing: "fashion-mnist images have 1 channel")
        expectError(good.replacingOccurrences(of: "num_classes: 10", with: "num_classes: 100"), key: "model.num_classes",
                    containing: "10 classes")
    }

    @Test func overridesApplyAndAreNamedWhenWrong() throws {
        let c = try parse(good, overrides: ["training.epochs=3", "optimizer.lr=5e-4", "data.mean=[0.5]", "data.augmentation=none"])
        #expect(c.training.epochs == 3 && c.optimizer.lr == 5e-4 && c.data.mean == [0.5] && c.data.augmentation.isNone)
        let n = try parse(good, overrides: ["training={epochs: 2, batch_size: 64}"])
        #expect(n.training.epochs == 2 && n.training.batchSize == 64)
        expectError(good, overrides: ["training.epohcs=3"], key: "training.epohcs", containing: "did you mean", file: "--set")
        expectError(good, overrides: ["model.heads=7"], key: "model.heads", containing: "does not divide", file: "--set")
        expectError(good, overrides: ["model.dim.x=1"], key: "model.dim.x", containing: "not a mapping", file: "--set")
        expectError(good, overrides: ["training.epochs"], key: "training.epochs", containing: "key=value", file: "--set")
    }
}

@Suite("experiments")
struct ExperimentTests {
    @Test func theRepositoryExperimentParsesIntoValidConfigs() throws {
        let e = try Experiment.load("\(repoRoot)/configs/experiments/fmnist-tiny.yaml")
        #expect(e.variants.count == 20 && e.variants[1].slug == "svite-50" && e.variants[11].slug == "s2vite-40")
        let configs = try e.configs()
        #expect(configs[1].sparsity.method == .svite && configs[1].sparsity.sparsity == 0.5)
        #expect(configs[9].model.depth == 3 && configs.allSatisfy { $0.training.epochs == 7 })
        #expect(configs[11].sparsity.method == .s2vite && configs[11].sparsity.headDensity == 0.6)
        // The S2ViTE rows keep 2 of 3 heads (⌈0.6·3⌉; 0.67 would round up to all 3).
        for i in [10, 11, 12, 16, 17, 18] {
            #expect(UnitSelection.budget(density: configs[i].sparsity.keptHeadFraction, of: 3) == 2, "\(e.variants[i].name)")
        }
        #expect(configs[12].sparsity.method == .ssp && configs[12].sparsity.keptNeuronFraction == 0.6)
        #expect(configs[14].model.tokenKeep == 0.9 && configs[14].model.blockTokens == 45 && configs[18].sparsity.method == .s2vite)
        #expect(Set(configs.map(\.name)).count == 20)
    }

    /// The claims experiment: 21 variants of the 6-head model, three seeds each, run
    /// seed-major into VARIANT/seed-N; its Small-Dense rows have about the active
    /// parameters of the SViTE rows they face; S2ViTE keeps 4 of 6 heads; SViTE also at
    /// 90% and 95%, where its sparse kernels can pay.
    @Test func theClaimsExperimentRunsEveryVariantPerSeed() throws {
        let e = try Experiment.load("\(repoRoot)/configs/experiments/fmnist-claims.yaml")
        #expect(e.variants.count == 21 && e.seeds == [0, 1, 2] && e.runs.count == 63)
        #expect(e.runs[0].seed == 0 && e.runs[21].seed == 1 && e.runs[21].variant.name == "Dense")
        #expect(e.runDirectory(e.runs[22]) == "runs/experiments/fmnist-claims/svite-50/seed-1")
        let configs = try e.configs()
        #expect(configs.allSatisfy { $0.model.heads == 6 && $0.training.epochs == 10 })
        #expect(e.config(e.runs[22], variantConfig: configs[1]).training.seed == 1)
        #expect(configs[3].sparsity.method == .svite && configs[3].sparsity.sparsity == 0.9 && configs[4].sparsity.sparsity == 0.95)
        func active(_ i: Int) -> Double {
            let c = configs[i], m = ViTModel(config: c.model)
            let prunable = MaskSet.prunableTensors(m.layout).reduce(0) { $0 + $1.count }
            return Double(m.layout.parameterCount) - (c.sparsity.method == .dense ? 0 : c.sparsity.sparsity * Double(prunable))
        }
        let smallDense3 = e.variants.firstIndex { $0.name.hasPrefix("Small-Dense (3") }!, smallDense2 = smallDense3 + 1
        #expect(abs(active(smallDense3) / active(1) - 1) < 0.1 && abs(active(smallDense2) / active(2) - 1) < 0.15)
        let s2 = e.variants.firstIndex { $0.name == "S2ViTE 40%" }!
        #expect(UnitSelection.budget(density: configs[s2].sparsity.keptHeadFraction, of: 6) == 4)
        #expect(configs[s2].sparsity.unitExchange == .floor)
    }

    @Test func experimentTablesGiveMeanAndSpread() {
        let (m, sd) = Experiment.meanAndDeviation([85, 86, 87])
        #expect(m == 86 && abs(sd - 1) < 1e-12)
        #expect(Experiment.meanAndDeviation([3]) == (3, 0))
    }

    /// The results file is the experiment's record: a run whose row it holds with the
    /// fingerprint of the config it would run now counts as done without its directory;
    /// a changed config, another seed or another variant does not match; a results file
    /// that cannot be read is an error, not an empty table (rewriting it would lose rows).
    @Test func recordedRowsStandForRunsOnlyWithTheirConfig() throws {
        try withTemporaryDirectory { dir in
            let text = "name: rec\nbase: fmnist-tiny\nseeds: [0, 1]\nset: [training.epochs=1]\nvariants:\n  - name: Dense\n  - name: SViTE 50%\n    set: [sparsity.method=svite, sparsity.sparsity=0.5]\n"
            try text.write(toFile: "\(dir)/e.yaml", atomically: true, encoding: .utf8)
            let e = try Experiment.load("\(dir)/e.yaml")
            let configs = try e.configs()
            let run = e.runs[1]  // SViTE 50%, seed 0
            let print = Experiment.fingerprint(e.config(run, variantConfig: configs[1]))
            #expect(print != Experiment.fingerprint(e.config(e.runs[3], variantConfig: configs[1])))  // seed 1
            #expect(print != Experiment.fingerprint(configs[0]))
            let rows: [[String: Any]] = [["variant": "SViTE 50%", "seed": 0, "config_hash": print, "top1": 0.8]]
            let json = try JSONSerialization.data(withJSONObject: ["name": "rec", "rows": rows])
            try json.write(to: URL(fileURLWithPath: "\(dir)/rec.json"))
            let recorded = try Experiment.recordedRows("\(dir)/rec.json")
            #expect(e.recorded(run, fingerprint: print, in: recorded)?["top1"] as? Double == 0.8)
            #expect(e.recorded(e.runs[3], fingerprint: print, in: recorded) == nil)  // seed 1 is not recorded
            var changed = configs[1]
            changed.sparsity.updateInterval += 1
            #expect(e.recorded(run, fingerprint: Experiment.fingerprint(e.config(run, variantConfig: changed)), in: recorded) == nil)
            #expect(try Experiment.recordedRows("\(dir)/missing.json").isEmpty)
            try "{ not json".write(toFile: "\(dir)/bad.json", atomically: true, encoding: .utf8)
            #expect(throws: ConfigError.self) { _ = try Experiment.recordedRows("\(dir)/bad.json") }
        }
    }

    /// Time saving is in CPU seconds where the rows have them, in wall time (marked) where not.
    @Test func timeSavingPrefersCPUSeconds() throws {
        let e = Experiment(name: "t", base: "fmnist-tiny", common: [], variants: [.init(name: "Dense", overrides: []), .init(name: "Half", overrides: [])],
                           file: "t.yaml")
        func row(_ v: String, _ wall: Double, _ cpu: Double?, params: Int) -> [String: Any] {
            var r: [String: Any] = ["variant": v, "seconds": wall, "top1": 0.5, "active_parameters": params, "flops": 100.0, "tokens": 50]
            if let cpu { r["cpu_seconds"] = cpu }
            return r
        }
        let withCPU = e.table(rows: [row("Dense", 100, 200, params: 10), row("Half", 100, 150, params: 5)], denseParameters: 10, denseFLOPs: 100)
        #expect(withCPU.contains("| 25.0% |"), "\(withCPU)")
        let wallOnly = e.table(rows: [row("Dense", 100, nil, params: 10), row("Half", 80, 150, params: 5)], denseParameters: 10, denseFLOPs: 100)
        #expect(wallOnly.contains("| 20.0% (wall) |"), "\(wallOnly)")
    }

    /// With step timings (`--time-steps`) the table shows each variant's step time and the
    /// saving from it; a variant without one says it was not timed.
    @Test func stepTimingReplacesTheCPUSaving() throws {
        let e = Experiment(name: "t", base: "fmnist-tiny", common: [], variants: [.init(name: "Dense", overrides: []), .init(name: "Half", overrides: []),
                                                                                  .init(name: "Other", overrides: [])], file: "t.yaml")
        func row(_ v: String, params: Int) -> [String: Any] {
            ["variant": v, "seconds": 100.0, "cpu_seconds": 200.0, "top1": 0.5, "active_parameters": params, "flops": 100.0, "tokens": 50]
        }
        let timing: [String: Any] = ["Dense": ["ms": 300.0, "saving": 0.0], "Half": ["ms": 201.0, "saving": 0.33]]
        let table = e.table(rows: [row("Dense", params: 10), row("Half", params: 5), row("Other", params: 5)], denseParameters: 10, denseFLOPs: 100,
                            stepTiming: timing)
        #expect(table.contains("| time | step ms | time saving (step) |"), "\(table)")
        #expect(table.contains("| 201.0 | 33.0% |") && table.contains("| 300.0 | 0.0% |") && table.contains("| – | not timed |"), "\(table)")
        #expect(table.split(separator: "\n").allSatisfy { $0.filter { $0 == "|" }.count == 10 }, "\(table)")
    }

    /// Every row committed in docs/results/fmnist-claims.json still stands: its fingerprint
    /// is the one its run would have now. A new config key belongs in
    /// `fingerprintNeutralLines` at a default that changes nothing, or every recorded run
    /// is repeated (adding `communication.rank_by` once started the 57 runs afresh).
    @Test func committedResultsStillStand() throws {
        let e = try Experiment.load("\(repoRoot)/configs/experiments/fmnist-claims.yaml")
        let configs = try e.configs()
        let rows = try Experiment.recordedRows("\(repoRoot)/docs/results/fmnist-claims.json")
        var matched = 0, unmatched: [String] = []
        for r in e.runs {
            guard let v = e.variants.firstIndex(where: { $0.name == r.variant.name }) else { continue }
            let print = Experiment.fingerprint(e.config(r, variantConfig: configs[v]))
            if e.recorded(r, fingerprint: print, in: rows) != nil { matched += 1 } else { unmatched.append("\(r.variant.name) seed \(r.seed.map(String.init) ?? "-")") }
        }
        #expect(!rows.isEmpty && matched == rows.count,
                "\(matched) of \(rows.count) committed rows match their runs' fingerprints; no match for \(unmatched.prefix(20))")
    }

    /// `--time-steps` writes its result into the results file beside the rows, and the
    /// rows stay; the keys added after rows were recorded do not change their fingerprints
    /// at their defaults, and do away from them.
    @Test func stepTimingIsKeptWithTheRows() throws {
        try withTemporaryDirectory { dir in
            let rows: [[String: Any]] = [["variant": "Dense", "seed": 0, "config_hash": "abc", "top1": 0.8]]
            try JSONSerialization.data(withJSONObject: ["name": "rec", "rows": rows]).write(to: URL(fileURLWithPath: "\(dir)/rec.json"))
            try Experiment.writeStepTiming(["reference": "Dense", "variants": ["Dense": ["ms": 3.0, "saving": 0.0]]], to: "\(dir)/rec.json")
            #expect(try Experiment.recordedRows("\(dir)/rec.json").count == 1)
            #expect(try Experiment.recordedStepTiming("\(dir)/rec.json")?["reference"] as? String == "Dense")
            #expect(try Experiment.recordedStepTiming("\(dir)/missing.json") == nil)
            try "{ not json".write(toFile: "\(dir)/bad.json", atomically: true, encoding: .utf8)
            #expect(throws: ConfigError.self) { try Experiment.writeStepTiming([:], to: "\(dir)/bad.json") }
        }
        let plain = try RunConfig.resolve("fmnist-tiny", overrides: [])
        #expect(Experiment.fingerprintNeutralLines.allSatisfy { plain.yaml.contains($0 + "\n") }, "\(plain.yaml)")
        let skip = try RunConfig.resolve("fmnist-tiny", overrides: ["training.on_nonfinite=skip"])
        #expect(Experiment.fingerprint(skip) != Experiment.fingerprint(plain))
        // A run that sends every value: no communication key changes it (a recorded row
        // with dense_below 0, the default then, still stands); one that compresses: they do.
        let otherWire = try RunConfig.resolve("fmnist-tiny", overrides: ["communication.dense_below=0", "communication.values=fp32"])
        #expect(Experiment.fingerprint(otherWire) == Experiment.fingerprint(plain))
        let topK = try RunConfig.resolve("fmnist-tiny", overrides: ["communication.gradient_density=0.01"])
        let topKOther = try RunConfig.resolve("fmnist-tiny", overrides: ["communication.gradient_density=0.01", "communication.dense_below=0"])
        #expect(Experiment.fingerprint(topK) != Experiment.fingerprint(plain) && Experiment.fingerprint(topK) != Experiment.fingerprint(topKOther))
    }

    /// The step timer runs every variant's step each round and measures against the
    /// reference (whose saving is 0 by construction), for dense, unstructured, structured,
    /// token-selecting and shallower variants alike.
    @Test func stepTimingTimesEveryVariantEachRound() throws {
        try withTemporaryDirectory { dir in
            try writeSyntheticIDX(dir: dir, train: 64, test: 16)
            let base = try tinyRunConfig(dataDir: dir)
            func variant(_ extra: [String]) throws -> RunConfig { try tinyRunConfig(dataDir: dir, extra: extra) }
            let runs: [(name: String, config: RunConfig)] = [
                ("Dense", base), ("SViTE", try variant(["sparsity.method=svite"])), ("S2ViTE", try variant(["sparsity.method=s2vite"])),
                ("SSP", try variant(["sparsity.method=ssp", "sparsity.sparsity=0.5"])), ("Tokens", try variant(["model.token_keep=0.5"])),
                ("Shallow", try variant(["model.depth=1"])),
            ]
            let entries = try StepTiming(batch: 8, threads: 1, rounds: 3, warmup: 1).time(runs: runs, reference: "Dense")
            #expect(entries.map(\.name) == runs.map(\.name))
            #expect(entries.allSatisfy { $0.samples.count == 3 && $0.samples.allSatisfy { $0 > 0 } && $0.seconds > 0 })
            #expect(entries[0].saving == 0)
            #expect(throws: CheckpointError.self) { _ = try StepTiming(batch: 8, threads: 1).time(runs: runs, reference: "Nope") }
        }
    }

    @Test func badExperimentsAreNamed() throws {
        try withTemporaryDirectory { dir in
            func load(_ text: String) throws -> Experiment {
                try text.write(toFile: "\(dir)/e.yaml", atomically: true, encoding: .utf8)
                return try Experiment.load("\(dir)/e.yaml")
            }
            #expect(throws: ConfigError.self) { _ = try load("name: x\nvariants:\n  - name: a\n") }  // no base
            #expect(throws: ConfigError.self) { _ = try load("base: default\nvariants:\n  - nmae: a\n") }
            #expect(throws: ConfigError.self) { _ = try load("base: default\nvariants:\n  - name: a\n  - name: A\n") }
            #expect(throws: ConfigError.self) { _ = try load("base: default\nseeds: [0, -1]\nvariants:\n  - name: a\n") }
            #expect(throws: ConfigError.self) { _ = try load("base: default\nseeds: [1, 1]\nvariants:\n  - name: a\n") }
            do {
                _ = try load("base: default\nvariants:\n  - name: a\n    set: [training.epohcs=1]\n").configs()
                Issue.record("a bad override should fail")
            } catch let e as ConfigError {
                #expect(e.key == "training.epohcs")
            }
        }
    }
}

/// The README's config block is held to the sections' key tables: every declared key is
/// there (as a key, or commented out when it is an option), nothing else is, and the
/// block parses to the defaults it claims to show.
@Suite("config documentation")
struct ConfigDocumentationTests {
    @Test func readmeConfigBlockMatchesTheDeclaredKeys() throws {
        let readme = try String(contentsOfFile: "\(repoRoot)/README.md", encoding: .utf8)
        let anchor = try #require(readme.range(of: "the defaults are shown:"))
        let open = try #require(readme.range(of: "```yaml\n", range: anchor.upperBound ..< readme.endIndex))
        let close = try #require(readme.range(of: "```", range: open.upperBound ..< readme.endIndex))
        let block = String(readme[open.upperBound ..< close.lowerBound])

        let sectionLine = try Regex("^([a-z_]+):"), keyLine = try Regex("^  (?:# )?([a-z_]+):")
        var documented: [String: Set<String>] = [:]
        var current: String?
        for line in block.split(separator: "\n") {
            if let m = try sectionLine.firstMatch(in: String(line)), let name = m.output[1].substring {
                current = String(name)
                documented[String(name), default: []] = []
            } else if let m = try keyLine.firstMatch(in: String(line)), let key = m.output[1].substring, let c = current {
                documented[c, default: []].insert(String(key))
            }
        }
        let declared: [String: [String]] = [
            ViTConfig.sectionName: ViTConfig.keyNames, DataConfig.sectionName: DataConfig.keyNames,
            OptimizerConfig.sectionName: OptimizerConfig.keyNames, ScheduleConfig.sectionName: ScheduleConfig.keyNames,
            TrainingConfig.sectionName: TrainingConfig.keyNames, SparsityConfig.sectionName: SparsityConfig.keyNames,
            ComputeConfig.sectionName: ComputeConfig.keyNames, CommunicationConfig.sectionName: CommunicationConfig.keyNames,
        ]
        #expect(Set(documented.keys) == Set(RunConfig.sections), "README sections: \(documented.keys.sorted())")
        for (section, keys) in declared {
            let doc = documented[section] ?? []
            let missing = Set(keys).subtracting(doc), extra = doc.subtracting(keys)
            #expect(missing.isEmpty && extra.isEmpty, "README's \(section): missing \(missing.sorted()), not keys \(extra.sorted())")
        }
        let parsed = try RunConfig.parse(yaml: block, file: "README.md")
        let defaults = RunConfig(name: "fmnist-tiny", model: try #require(ViTConfig.presets["fmnist-tiny"]))
        let shown = parsed.yaml.split(separator: "\n"), actual = defaults.yaml.split(separator: "\n")
        #expect(shown == actual, "README shows \(shown.filter { !actual.contains($0) }), the defaults are \(actual.filter { !shown.contains($0) })")
    }

    /// Each section's YAML parses back to an equal section (the table is both ways).
    @Test func everySectionRoundTrips() throws {
        let yaml = """
        name: x
        model: {image_size: 28, patch_size: 7, in_channels: 1, num_classes: 10, dim: 16, depth: 2, heads: 2, token_keep: 0.75, selector_hidden: 4, block_heads: [2, 1]}
        data: {dataset: mnist, augmentation: {random_crop_padding: 2, horizontal_flip: true}, train_limit: 5}
        optimizer: {name: SGD, lr: 0.1, momentum: 0.5, nesterov: true}
        schedule: {name: constant, warmup_steps: 7}
        training: {epochs: 2, seed: 9, precision: bf16, selector_relaxation: token_scale}
        sparsity: {method: svite, unit_exchange: ceil, candidate_multiplier: 3}
        compute: {backend: openblas}
        """
        let c = try RunConfig.parse(yaml: yaml, file: "x.yaml")
        #expect(c.optimizer.kind == .sgd && c.optimizer.nesterov && c.schedule.warmupSteps == 7 && c.training.seed == 9)
        #expect(c.data.kind == .mnist && c.data.mean == [0.1307] && c.data.augmentation.cropPadding == 2)
        #expect(c.model.blockHeads == [2, 1] && c.model.selectorHidden == 4 && c.sparsity.unitExchange == .ceil)
        let back = try RunConfig.parse(yaml: c.yaml, file: "back.yaml")
        #expect(back.yaml == c.yaml)
        #expect(back.model == c.model && back.data == c.data && back.optimizer == c.optimizer && back.schedule == c.schedule
            && back.training == c.training && back.sparsity == c.sparsity && back.compute == c.compute)
    }
}

/// The module graph as declared: every module a target's files import is a dependency it
/// names in Package.swift (none compiles only through another's dependencies), and the
/// worker links neither the optimizer nor the trainer.
@Suite("package")
struct PackageTests {
    @Test func everyImportIsDeclared() throws {
        let package = try String(contentsOfFile: "\(repoRoot)/Package.swift", encoding: .utf8)
        let targetStart = try Regex(#"\.(?:target|executableTarget|testTarget|systemLibrary)\(name: "(\w+)""#)
        let quoted = try Regex(#""(\w+)""#), packageName = try Regex(#"package: "[^"]*""#)
        let starts = package.matches(of: targetStart)
        var declared: [String: Set<String>] = [:]
        for (i, m) in starts.enumerated() {
            let name = String(m.output[1].substring!)
            let end = i + 1 < starts.count ? starts[i + 1].range.lowerBound : package.endIndex
            var chunk = String(package[m.range.upperBound ..< end])
            guard let deps = chunk.range(of: "dependencies:") else { declared[name] = []; continue }
            chunk = String(chunk[deps.upperBound...]).components(separatedBy: "swiftSettings")[0].replacing(packageName, with: "")
            declared[name] = Set(chunk.matches(of: quoted).map { String($0.output[1].substring!) })
        }
        let platform: Set<String> = ["Foundation", "FoundationNetworking", "Glibc", "Darwin", "Dispatch", "Testing", "XCTest", "Synchronization"]
        let importLine = try Regex(#"^(?:@testable )?import (\w+)"#)
        let fm = FileManager.default
        var checked = 0
        for root in ["Sources", "Tests"] {
            for target in try fm.contentsOfDirectory(atPath: "\(repoRoot)/\(root)").sorted() {
                guard let files = fm.enumerator(atPath: "\(repoRoot)/\(root)/\(target)") else { continue }
                var imports = Set<String>()
                for case let file as String in files where file.hasSuffix(".swift") {
                    let text = try String(contentsOfFile: "\(repoRoot)/\(root)/\(target)/\(file)", encoding: .utf8)
                    for line in text.split(separator: "\n") {
                        if let m = try importLine.firstMatch(in: String(line)) { imports.insert(String(m.output[1].substring!)) }
                    }
                }
                let undeclared = imports.subtracting(platform).subtracting(declared[target] ?? []).subtracting([target])
                #expect(undeclared.isEmpty, "\(root)/\(target) imports \(undeclared.sorted()) without naming them in Package.swift")
                checked += 1
            }
        }
        #expect(checked >= 20)
        let worker = try #require(declared["Worker"])
        // The worker computes gradients and, with updates on the downlink, applies the
        // coordinator's updates to its replica (Optim); the training loop is not its part.
        #expect(!worker.contains("Training") && !worker.contains("Coordinator"), "the worker links \(worker.sorted())")
    }
}

extension ConfigTests {
    /// Two configs differ exactly in the keys changed, named `section.key` (nested keys
    /// too), so a resume can name what an edited config.yaml would have changed.
    @Test func differencesNameTheChangedKeys() throws {
        let a = try RunConfig.resolve("default", overrides: [])
        let b = try RunConfig.resolve("default", overrides: ["optimizer.lr=0.002", "training.epochs=7"])
        let keys = a.differences(from: b).map(\.key)
        #expect(keys.contains("optimizer.lr") && keys.contains("training.epochs"), "\(keys)")
        #expect(keys == ["optimizer.lr", "training.epochs"], "\(keys)")
        #expect(RunConfig.flatten("a:\n  b: 1\n  c:\n    d: [2, 3]\ne: x\n") == ["a.b": "1", "a.c.d": "[2, 3]", "e": "x"])
        #expect(a.differences(from: b).first { $0.key == "optimizer.lr" }?.other == "0.002")
        #expect(a.differences(from: a).isEmpty)
    }
}

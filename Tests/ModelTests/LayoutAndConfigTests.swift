import Foundation
import Testing
import Kernels
@testable import Model

@Suite("parameter layout and initialisation")
struct LayoutTests {
    @Test(arguments: [("deit-tiny", 5_717_416), ("deit-small", 22_050_664), ("deit-base", 86_567_656)])
    func parameterCountsMatchTimm(name: String, count: Int) {
        // timm's deit_{tiny,small,base}_patch16_224 parameter counts.
        #expect(ParameterLayout(config: ViTConfig.presets[name]!).parameterCount == count)
    }

    @Test func namesAndShapesAreTimms() {
        let c = ViTConfig.presets["fmnist-tiny"]!
        let l = ParameterLayout(config: c)
        #expect(l.tensors.count == 4 + 12 * 6 + 4)
        #expect(l["cls_token"]?.shape == [1, 1, 96])
        #expect(l["pos_embed"]?.shape == [1, 50, 96])
        #expect(l["patch_embed.proj.weight"]?.shape == [96, 1, 4, 4])
        #expect(l["blocks.5.attn.qkv.weight"]?.shape == [288, 96])
        #expect(l["blocks.0.attn.proj.weight"]?.shape == [96, 96])
        #expect(l["blocks.3.mlp.fc1.weight"]?.shape == [384, 96])
        #expect(l["blocks.3.mlp.fc2.weight"]?.shape == [96, 384])
        #expect(l["head.weight"]?.shape == [10, 96])
        #expect(l["blocks.6.norm1.weight"] == nil)
        // Offsets are aligned, increasing, and do not overlap.
        var end = 0
        for t in l.tensors {
            #expect(t.offset % ParameterLayout.alignment == 0)
            #expect(t.offset >= end)
            end = t.offset + t.count
        }
        #expect(l.count >= end)
    }

    @Test func hashSeparatesLayouts() {
        let a = ParameterLayout(config: ViTConfig.presets["fmnist-tiny"]!)
        var c = ViTConfig.presets["fmnist-tiny"]!
        #expect(a.hash == ParameterLayout(config: c).hash)
        c.depth = 5
        #expect(a.hash != ParameterLayout(config: c).hash)
    }

    @Test func initialisationFollowsTimm() {
        let model = ViTModel(config: ViTConfig.presets["fmnist-tiny"]!)
        let p = FloatBuffer(count: model.layout.count)
        Initializer.initialize(p, layout: model.layout, seed: 1)
        let l = model.layout
        #expect(p.view(l.spec("blocks.0.norm1.weight")).allSatisfy { $0 == 1 })
        #expect(p.view(l.spec("blocks.0.norm1.bias")).allSatisfy { $0 == 0 })
        #expect(p.view(l.spec("blocks.2.attn.qkv.bias")).allSatisfy { $0 == 0 })
        let w = p.view(l.spec("blocks.1.mlp.fc1.weight"))
        let mean = w.reduce(0, +) / Float(w.count)
        let std = (w.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(w.count)).squareRoot()
        #expect(abs(mean) < 1e-3)
        #expect(std > 0.016 && std < 0.019)  // N(0, 0.02²) truncated at ±2σ has σ ≈ 0.0176
        #expect(w.allSatisfy { abs($0) <= 0.04 })
        let pe = p.view(l.spec("patch_embed.proj.weight"))
        #expect(pe.allSatisfy { abs($0) <= 0.25 } && pe.contains { abs($0) > 0.2 })  // U(±1/√16)
        // Same seed, same parameters; another seed, others.
        let q = FloatBuffer(count: l.count), r = FloatBuffer(count: l.count)
        Initializer.initialize(q, layout: l, seed: 1)
        Initializer.initialize(r, layout: l, seed: 2)
        #expect(p.array == q.array)
        #expect(p.array != r.array)
    }

    @Test func flopCountOfDeitTiny() {
        // DeiT-Tiny is quoted at 1.3 GMACs: 2.5 GFLOPs forward.
        let f = ViTModel(config: ViTConfig.presets["deit-tiny"]!).forwardFLOPsPerImage
        #expect(f > 2.4e9 && f < 2.6e9, "\(f)")
    }
}

@Suite("configs")
struct ConfigTests {
    static let repoConfigs: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("configs").path
    }()

    @Test(arguments: ["deit-tiny", "deit-small", "deit-base", "fmnist-tiny"])
    func presetFilesMatchBuiltIns(name: String) throws {
        let file = try ModelConfigFile.load(path: "\(Self.repoConfigs)/\(name).yaml")
        #expect(file.model == ViTConfig.presets[name])
        #expect(file.name == name)
    }

    @Test func resolvesNamesPathsAndPresets() throws {
        #expect(try ModelConfigFile.resolve("fmnist-tiny", searchDirectory: Self.repoConfigs).model.dim == 96)
        #expect(try ModelConfigFile.resolve("deit-small", searchDirectory: "/nonexistent").model.dim == 384)
        #expect(throws: ConfigError.self) { try ModelConfigFile.resolve("no-such-config", searchDirectory: "/nonexistent") }
    }

    func parse(_ yaml: String) throws -> ModelConfigFile {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("svite-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("bad.yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return try ModelConfigFile.load(path: path)
    }

    func expectError(_ yaml: String, key: String, containing text: String) {
        do {
            _ = try parse(yaml)
            Issue.record("expected an error for key \(key)")
        } catch let e as ConfigError {
            #expect(e.key == key, "\(e)")
            #expect(e.description.contains(text), "\(e)")
            #expect(e.file.hasSuffix("bad.yaml"))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    let good = "model:\n  image_size: 28\n  patch_size: 4\n  in_channels: 1\n  num_classes: 10\n  dim: 96\n  depth: 6\n  heads: 3\n"

    @Test func badInputIsNamed() throws {
        #expect(try parse(good).model == ViTConfig.presets["fmnist-tiny"])
        expectError(good + "  hedas: 2\n", key: "model.hedas", containing: "did you mean 'heads'")
        expectError(good + "optimiser: {}\n", key: "optimiser", containing: "unknown key")
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
}

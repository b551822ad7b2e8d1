import Core
import Foundation
import Images
import Kernels

/// The files of one split of an image folder (torchvision's `ImageFolder` layout:
/// ROOT/SPLIT/CLASS/NAME.jpg|jpeg|png), and what the model wants them turned into.
/// Pictures are not read here: a split of ImageNet is a list of names until a batch
/// needs them.
public struct ImageFolderFiles: Sendable, Equatable {
    public var root: String
    /// Paths relative to `root`, class by class, names sorted within each class.
    public var paths: [String]
    /// The output: channels (3: RGB, 1: luma) and side in pixels.
    public var channels: Int
    public var size: Int
    /// timm's crop_pct: evaluation resizes the shorter side to ⌊size / cropFraction⌋ and
    /// takes the central size×size.
    public var cropFraction: Double
}

public enum ImageFolder {
    public static let extensions: Set<String> = ["jpg", "jpeg", "png"]

    /// The folder holding a split: `train/` for training, `val/` (or else `test/`) for
    /// evaluation.
    public static func splitDirectory(root: String, split: Split) throws -> String {
        let names = split == .train ? ["train"] : ["val", "test"]
        var isDir: ObjCBool = false
        for n in names where FileManager.default.fileExists(atPath: "\(root)/\(n)", isDirectory: &isDir) && isDir.boolValue {
            return "\(root)/\(n)"
        }
        throw DataError(file: "\(root)/\(names.joined(separator: "|"))", problem: "no such folder",
                        remedy: "An image folder holds train/ and val/ (or test/), each with one folder of JPEG or PNG files per class (as torchvision's ImageFolder); set data.dir to the folder that holds them")
    }

    /// The class folders of `directory`, sorted by name (hidden ones skipped).
    public static func classes(in directory: String) throws -> [String] {
        let fm = FileManager.default
        let entries: [String]
        do { entries = try fm.contentsOfDirectory(atPath: directory) } catch {
            throw DataError(file: directory, problem: "cannot list the folder: \(error.localizedDescription)")
        }
        var isDir: ObjCBool = false
        let found = entries.filter { !$0.hasPrefix(".") && fm.fileExists(atPath: "\(directory)/\($0)", isDirectory: &isDir) && isDir.boolValue }
            .sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) }
        guard !found.isEmpty else {
            throw DataError(file: directory, problem: "holds no class folders",
                            remedy: "put each class's pictures in a folder of their own, named after the class (e.g. \(directory)/cat/0001.jpg)")
        }
        return found
    }

    /// One split's files and labels. `classes`: the training split's classes (the
    /// evaluation split must use the same labels; a class it lacks is fine, a class the
    /// training split lacks is an error). Files whose extension is not jpg, jpeg or png
    /// are skipped, as ImageFolder does; a training class without a picture is an error.
    public static func scan(root: String, split: Split, classes known: [String]? = nil) throws -> (classes: [String], paths: [String], labels: [Int32]) {
        let dir = try splitDirectory(root: root, split: split)
        let present = try classes(in: dir)
        let classes = known ?? present
        let index = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        if let stray = present.first(where: { index[$0] == nil }) {
            throw DataError(file: "\(dir)/\(stray)", problem: "is a class the training split does not have",
                            remedy: "every class folder of the evaluation split needs one of the same name under train/")
        }
        let splitName = (dir as NSString).lastPathComponent
        var paths: [String] = [], labels: [Int32] = []
        let fm = FileManager.default
        for name in present {
            let entries: [String]
            do { entries = try fm.contentsOfDirectory(atPath: "\(dir)/\(name)") } catch {
                throw DataError(file: "\(dir)/\(name)", problem: "cannot list the folder: \(error.localizedDescription)")
            }
            let files = entries.filter { !$0.hasPrefix(".") && extensions.contains(($0 as NSString).pathExtension.lowercased()) }
                .sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) }
            if files.isEmpty && split == .train {
                throw DataError(file: "\(dir)/\(name)", problem: "holds no .jpg, .jpeg or .png file",
                                remedy: "remove the folder or put the class's pictures in it")
            }
            for f in files {
                paths.append("\(splitName)/\(name)/\(f)")
                labels.append(Int32(index[name]!))
            }
        }
        guard !paths.isEmpty else { throw DataError(file: dir, problem: "holds no .jpg, .jpeg or .png file in any class folder") }
        return (classes, paths, labels)
    }
}

/// Turns the files of an image folder into the model's bytes, ahead of the step that
/// needs them: one background thread works through the images of the next batch
/// (`prefetch`) while the current one computes, and `take` hands over what is ready,
/// waits for what is under way, and makes the rest itself (in parallel, `threads`).
/// Only the latest prefetch request is kept, so it holds at most one batch ahead.
///
/// A picture that cannot be read or decoded is reported once (stderr, which a worker's
/// log keeps) and trained on as a mid-grey image: one bad file out of thousands must not
/// stop a run of hours, and the message names it.
public final class FolderImageLoader: @unchecked Sendable {
    public struct Key: Hashable, Sendable {
        public var index: Int32
        public var epoch: Int
        public var augment: Bool
        public init(index: Int32, epoch: Int, augment: Bool) { self.index = index; self.epoch = epoch; self.augment = augment }
    }

    public let files: ImageFolderFiles
    public let augmentation: DataConfig.Augmentation
    public let seed: UInt64
    /// Threads `take` decodes misses with.
    public var threads = 1
    let lock = NSCondition()
    var ready: [Key: [UInt8]] = [:]
    var pending: [Key] = []
    var working: Set<Key> = []
    var started = false
    var reported: Set<String> = []
    /// Counters for tests and the log: images made by the background thread, taken ready
    /// (or awaited), made on demand.
    public private(set) var prefetched = 0, hits = 0, misses = 0
    /// Seconds spent in `take` (what decoding cost the steps that waited for it).
    public private(set) var takeSeconds = 0.0

    /// One line for a log: how many images came ready and what the rest cost the steps.
    public var summary: String {
        lock.lock(); defer { lock.unlock() }
        let total = hits + misses
        return String(format: "images: %d taken, %d decoded ahead (%.1f%% of those taken were ready or under way), %d on demand; %.1f s in the steps waiting for pictures",
                      total, prefetched, total > 0 ? 100 * Double(hits) / Double(total) : 0, misses, takeSeconds)
    }

    public init(files: ImageFolderFiles, augmentation: DataConfig.Augmentation, seed: UInt64) {
        self.files = files; self.augmentation = augmentation; self.seed = seed
    }

    public var imageBytes: Int { files.channels * files.size * files.size }

    /// Starts making these images in the background, dropping what an earlier request
    /// made that this one does not want.
    public func prefetch(_ keys: [Key]) {
        lock.lock()
        let want = Set(keys)
        ready = ready.filter { want.contains($0.key) }
        pending = keys.filter { ready[$0] == nil && !working.contains($0) }
        // The thread lives while there is work (holding the loader), so a loader that is
        // dropped leaves no thread behind.
        if !started && !pending.isEmpty {
            started = true
            let t = Thread { self.background() }
            t.name = "svite-images"
            t.start()
        }
        lock.broadcast()
        lock.unlock()
    }

    /// The images of `keys` (imageBytes each, planar), in order. One caller at a time (a
    /// replica's or an evaluator's own loader).
    public func take(_ keys: [Key]) -> [[UInt8]] {
        // The same image twice (a Mixup partner drawn twice) is made once.
        let unique = Array(Set(keys))
        if unique.count < keys.count {
            let made = Dictionary(uniqueKeysWithValues: zip(unique, take(unique)))
            return keys.map { made[$0]! }
        }
        let started = DispatchTime.now().uptimeNanoseconds
        defer {
            let s = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            lock.lock(); takeSeconds += s; lock.unlock()
        }
        var out = [[UInt8]](repeating: [], count: keys.count)
        var claimed: [Int] = [], awaited: [Int] = []
        lock.lock()
        for (j, k) in keys.enumerated() {
            if let v = ready.removeValue(forKey: k) { out[j] = v; hits += 1 }
            else if working.contains(k) { awaited.append(j) }  // the background thread's
            else {
                pending.removeAll { $0 == k }
                working.insert(k); claimed.append(j); misses += 1
            }
        }
        lock.unlock()
        // What no one was making is made here, in parallel.
        nonisolated(unsafe) var made = [[UInt8]](repeating: [], count: claimed.count)
        let parts = max(1, min(threads, claimed.count))
        made.withUnsafeMutableBufferPointer { mb in
            nonisolated(unsafe) let m = mb
            Parallel.forEach(parts) { p in
                for c in Parallel.slice(p, of: parts, total: claimed.count) { m[c] = self.make(keys[claimed[c]]) }
            }
        }
        lock.lock()
        for (c, j) in claimed.enumerated() { out[j] = made[c]; working.remove(keys[j]) }
        for j in awaited {
            while ready[keys[j]] == nil { lock.wait() }
            out[j] = ready.removeValue(forKey: keys[j])!
            hits += 1
        }
        lock.unlock()
        return out
    }

    func background() {
        while true {
            lock.lock()
            guard !pending.isEmpty else {
                started = false
                lock.unlock()
                return
            }
            let k = pending.removeFirst()
            working.insert(k)
            lock.unlock()
            let v = make(k)
            lock.lock()
            working.remove(k)
            ready[k] = v
            prefetched += 1
            lock.broadcast()
            lock.unlock()
        }
    }

    /// One image: read, decoded at the smallest scale that keeps the crop at least as
    /// sharp as the output, cropped (random-resized for training when configured, else
    /// timm's centre crop), resized, mirrored (when flipping and the coin says so).
    public func make(_ k: Key) -> [UInt8] {
        let f = files, s = f.size
        let path = "\(f.root)/\(f.paths[Int(k.index)])"
        var out = [UInt8](repeating: 0, count: imageBytes)
        do {
            let data = try ImageDecoder.read(file: path)
            let (w, h) = try ImageDecoder.dimensions(data, file: path)
            var rng = Xoshiro256(seed: StreamSeed.mix(seed, StreamSeed.augmentation, UInt64(k.epoch), UInt64(k.index)))
            let region: PixelRegion
            if k.augment, let rrc = augmentation.randomResizedCrop {
                region = CropRegion.randomResized(width: w, height: h, scale: rrc.scale, ratio: rrc.ratio, rng: &rng)
            } else {
                region = CropRegion.center(width: w, height: h, size: s, cropFraction: f.cropFraction)
            }
            let mirror = k.augment && augmentation.horizontalFlip && rng.next() & 1 == 1
            let scale = max(Double(s) / region.width, Double(s) / region.height)
            let picture = try ImageDecoder.decode(data, file: path, minimumScale: scale)
            let r = region.scaled(Double(picture.width) / Double(w), Double(picture.height) / Double(h))
            picture.pixels.withUnsafeBufferPointer { px in
                out.withUnsafeMutableBufferPointer { o in
                    if f.channels == 3 {
                        Resample.crop(px.baseAddress!, .interleaved(channels: 3, height: picture.height, width: picture.width),
                                      region: r, outWidth: s, outHeight: s, mirror: mirror, into: o.baseAddress!)
                    } else {
                        let grey = Self.luma(px.baseAddress!, count: picture.width * picture.height)
                        grey.withUnsafeBufferPointer { g in
                            Resample.crop(g.baseAddress!, .planar(channels: 1, height: picture.height, width: picture.width),
                                          region: r, outWidth: s, outHeight: s, mirror: mirror, into: o.baseAddress!)
                        }
                    }
                }
            }
            if k.augment && augmentation.trivialAugment {
                var ta = Xoshiro256(seed: StreamSeed.mix(seed, StreamSeed.trivialAugment, UInt64(k.epoch), UInt64(k.index)))
                let choice = TrivialAugment.choose(&ta)
                out.withUnsafeMutableBufferPointer { TrivialAugment.apply(choice, to: $0.baseAddress!, channels: f.channels, height: s, width: s) }
            }
        } catch {
            report(path, error)
            for i in 0 ..< out.count { out[i] = 128 }
        }
        return out
    }

    /// Pillow's "L" conversion: L = (R·299 + G·587 + B·114) / 1000, rounded.
    static func luma(_ rgb: UnsafePointer<UInt8>, count: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { g, n in
            for i in 0 ..< count {
                let v = Int(rgb[3 * i]) * 299 + Int(rgb[3 * i + 1]) * 587 + Int(rgb[3 * i + 2]) * 114
                g[i] = UInt8((v + 500) / 1000)
            }
            n = count
        }
    }

    func report(_ path: String, _ error: Error) {
        lock.lock()
        let first = reported.insert(path).inserted
        lock.unlock()
        guard first else { return }
        FileHandle.standardError.write(Data("warning: \(error); training on it as a grey picture (said once per file; remove or replace the file)\n".utf8))
    }

    /// Files reported as unreadable so far.
    public var unreadable: [String] { lock.lock(); defer { lock.unlock() }; return reported.sorted() }
}

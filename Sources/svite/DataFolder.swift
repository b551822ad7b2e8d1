import ArgumentParser
import Config
import Datasets
import Foundation
import Images
import Kernels

/// Writes a built-in data set as an image folder: to see the layout `image-folder` reads,
/// and to time decoding from files against the same images in memory.
struct DataFolder: ParsableCommand {
    enum Format: String, ExpressibleByArgument, CaseIterable { case png, jpeg }

    static let configuration = CommandConfiguration(
        commandName: "data-folder",
        abstract: "Write a config's data set as an image folder (train/ and val/ of class folders).",
        discussion: """
        The layout `data.dataset: image-folder` reads (torchvision's ImageFolder): \
        OUT/train/CLASS/NNNNN.png and OUT/val/CLASS/NNNNN.png, the classes named and \
        numbered so their sorted order is the label order. PNG is lossless, so a model \
        trained on the folder (same size, `data.crop_pct: 1`, no augmentation) sees the \
        very bytes the built-in reader gives.

        Example: svite data-folder data/fmnist-folder --limit 2000
        """
    )

    @OptionGroup var configOptions: ConfigOptions

    @Argument(help: ArgumentHelp("Folder to write (created; must not hold a train/ or val/ yet).", valueName: "out"))
    var out: String

    @Option(name: .long, help: "Write only the first N images of each split (0: all).")
    var limit: Int = 0

    @Option(name: .long, help: "File format.")
    var format: Format = .png

    @Option(name: .long, help: "JPEG quality (1-100).")
    var quality: Int = 95

    @Option(name: .long, help: ArgumentHelp("Enlarge each picture to this side (antialiased bilinear), e.g. 256 to time the decoding of ImageNet-sized files (default: as they are).", valueName: "pixels"))
    var size: Int?

    func validate() throws {
        guard limit >= 0 else { throw ValidationError("--limit must be >= 0 (0: all), got \(limit)") }
        guard (1 ... 100).contains(quality) else { throw ValidationError("--quality must be between 1 and 100, got \(quality)") }
        if let size, !(1 ... 4096).contains(size) { throw ValidationError("--size must be between 1 and 4096, got \(size)") }
    }

    func run() throws {
        let config = try configOptions.load()
        guard config.data.kind != .imageFolder else { throw CommandFailure("the config's data set is already an image folder (\(config.data.directory))") }
        let fm = FileManager.default
        for split in ["train", "val"] where fm.fileExists(atPath: "\(out)/\(split)") {
            throw CommandFailure("\(out)/\(split) exists: choose an empty folder")
        }
        let names = config.data.kind.classNames
        // Folder names that sort in label order whatever the class names are.
        let folders = names.enumerated().map { k, n in
            String(format: "%02d-", k) + n.map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
        }
        var written = 0
        for (split, dirName) in [(Split.train, "train"), (.test, "val")] {
            let set = try config.data.load(split).prefix(limit)
            for f in folders { try fm.createDirectory(atPath: "\(out)/\(dirName)/\(f)", withIntermediateDirectories: true) }
            let bytes = set.imageBytes, plane = set.height * set.width
            for i in 0 ..< set.count {
                // Planar (C, H, W) bytes to interleaved RGB (grey repeated).
                var rgb = [UInt8](repeating: 0, count: plane * 3)
                for p in 0 ..< plane {
                    for c in 0 ..< 3 { rgb[3 * p + c] = set.pixels[i * bytes + (set.channels == 3 ? c : 0) * plane + p] }
                }
                var image = RGBImage(width: set.width, height: set.height, pixels: rgb)
                if let size {
                    var big = [UInt8](repeating: 0, count: 3 * size * size)
                    rgb.withUnsafeBufferPointer { src in
                        big.withUnsafeMutableBufferPointer { dst in
                            Resample.crop(src.baseAddress!, .interleaved(channels: 3, height: set.height, width: set.width),
                                          region: PixelRegion(x: 0, y: 0, width: Double(set.width), height: Double(set.height)),
                                          outWidth: size, outHeight: size, mirror: false, into: dst.baseAddress!)
                        }
                    }
                    // crop writes planar channels; files want them interleaved.
                    var inter = [UInt8](repeating: 0, count: big.count)
                    for p in 0 ..< size * size { for c in 0 ..< 3 { inter[3 * p + c] = big[c * size * size + p] } }
                    image = RGBImage(width: size, height: size, pixels: inter)
                }
                let data = format == .png ? try ImageEncoder.png(image) : try ImageEncoder.jpeg(image, quality: quality)
                let path = "\(out)/\(dirName)/\(folders[Int(set.labels[i])])/\(String(format: "%05d", i)).\(format == .png ? "png" : "jpg")"
                guard fm.createFile(atPath: path, contents: Data(data)) else {
                    throw CommandFailure("could not write \(path): \(String(cString: strerror(errno)))")
                }
                written += 1
            }
        }
        print("wrote \(written) \(format.rawValue) files of \(config.data.kind.rawValue) to \(out) (\(names.count) classes); train on them with --set data.dataset=image-folder --set data.dir=\(out) --set data.crop_pct=1 --set data.mean=\(config.data.mean) --set data.std=\(config.data.std)")
    }
}

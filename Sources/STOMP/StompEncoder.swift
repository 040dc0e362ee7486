/// Writes STOMP frames: the command, each header (escaped, unless the command's headers never
/// are), an empty line, the body and NUL. `content-length` is the caller's to add; a MESSAGE
/// whose body may hold NUL needs it.
public enum StompEncoder {
    public static func encode(_ frame: StompFrame, escaping: Bool = true) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(frame.command.rawValue.utf8.count + 32 * frame.headers.count + frame.body.count + 2)
        out.append(contentsOf: frame.command.rawValue.utf8)
        out.append(0x0A)
        let escaped = escaping && frame.command.escapesHeaders
        for header in frame.headers {
            append(header.name, to: &out, escaped: escaped)
            out.append(UInt8(ascii: ":"))
            append(header.value, to: &out, escaped: escaped)
            out.append(0x0A)
        }
        out.append(0x0A)
        out.append(contentsOf: frame.body)
        out.append(0)
        return out
    }

    /// Appends header text, escaped (STOMP 1.2, "Value Encoding"). Without escaping, CR and LF
    /// (which cannot be written) become spaces, so no header can break the frame.
    public static func append(_ text: String, to out: inout [UInt8], escaped: Bool) {
        for byte in text.utf8 {
            switch byte {
            case 0x0D: out += escaped ? [0x5C, UInt8(ascii: "r")] : [0x20]
            case 0x0A: out += escaped ? [0x5C, UInt8(ascii: "n")] : [0x20]
            case UInt8(ascii: ":") where escaped: out += [0x5C, UInt8(ascii: "c")]
            case 0x5C where escaped: out += [0x5C, 0x5C]
            default: out.append(byte)
            }
        }
    }
}

import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.1 client over a blocking loopback socket, for the tests that talk to a real
/// `budget-ledger serve` process or need many connections at once.
///
/// It replaces AsyncHTTPClient, whose TLS stack (BoringSSL) was about 900 of the 956 steps of
/// a fresh build, for two tests that never use TLS. One request per connection
/// (`Connection: close`); the body is read in content-length, chunked or until-close framing.
struct PlainHTTPClient {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// A response whose body is read as it arrives.
    final class Response {
        let status: UInt
        let headers: [String: String]
        private let socket: Int32
        private var buffered: [UInt8]
        private var finished = false
        /// Bytes left in the current chunk (chunked framing), or in the body (content-length).
        private var remaining: Int?
        private let chunked: Bool

        fileprivate init(status: UInt, headers: [String: String], socket: Int32, buffered: [UInt8]) {
            self.status = status
            self.headers = headers
            self.socket = socket
            self.buffered = buffered
            chunked = headers["transfer-encoding"]?.lowercased() == "chunked"
            remaining = chunked ? nil : headers["content-length"].flatMap { Int($0) }
        }

        deinit { close(socket) }

        /// The next piece of the body, nil at its end.
        func next() throws -> [UInt8]? {
            if finished { return nil }
            if chunked { return try nextChunk() }
            if let left = remaining {
                if left == 0 { finished = true; return nil }
                if buffered.isEmpty, try !fill() { throw Failure(description: "connection closed \(left) bytes early") }
                let piece = Array(buffered.prefix(left))
                buffered.removeFirst(piece.count)
                remaining = left - piece.count
                return piece
            }
            if buffered.isEmpty, try !fill() { finished = true; return nil }
            defer { buffered = [] }
            return buffered
        }

        /// The rest of the body, as text.
        func text() throws -> String {
            var body: [UInt8] = []
            while let piece = try next() { body += piece }
            return String(decoding: body, as: UTF8.self)
        }

        private func nextChunk() throws -> [UInt8]? {
            if remaining == nil || remaining == 0 {
                if remaining == 0 { _ = try line() }  // the CRLF after a chunk's data
                let size = try line().split(separator: ";").first.map(String.init) ?? ""
                guard let length = Int(size.trimmingCharacters(in: .whitespaces), radix: 16) else {
                    throw Failure(description: "bad chunk size \(size)")
                }
                if length == 0 {
                    finished = true
                    return nil
                }
                remaining = length
            }
            if buffered.isEmpty, try !fill() { throw Failure(description: "connection closed inside a chunk") }
            let piece = Array(buffered.prefix(remaining!))
            buffered.removeFirst(piece.count)
            remaining! -= piece.count
            return piece
        }

        private func line() throws -> String {
            while true {
                if let end = buffered.firstIndex(of: 10) {
                    let text = String(decoding: buffered[..<end], as: UTF8.self)
                    buffered.removeFirst(end + 1)
                    return text.hasSuffix("\r") ? String(text.dropLast()) : text
                }
                if try !fill() { throw Failure(description: "connection closed inside a line") }
            }
        }

        /// Reads what the socket has; false at its end.
        fileprivate func fill() throws -> Bool {
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            let count = chunk.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            if count < 0 { throw Failure(description: "recv failed: errno \(errno)") }
            buffered += chunk.prefix(count)
            return count > 0
        }
    }

    /// Sends one request to `url` (`http://127.0.0.1:PORT/path`) and returns once the status
    /// line and headers have arrived; the body is read from the response.
    static func send(
        _ method: String, _ url: String, token: String? = nil, json: String? = nil, timeoutSeconds: Int = 120
    ) throws -> Response {
        guard let match = url.wholeMatch(of: /http:\/\/127\.0\.0\.1:(\d+)(\/.*)/), let port = UInt16(match.1) else {
            throw Failure(description: "not a loopback URL: \(url)")
        }
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw Failure(description: "socket failed: errno \(errno)") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(socket)
            throw Failure(description: "connect to port \(port) failed: errno \(errno)")
        }
        let body = Array((json ?? "").utf8)
        var head = "\(method) \(match.2) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        if let token { head += "Authorization: Bearer \(token)\r\n" }
        if json != nil { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        let request = Array((head + "\r\n").utf8) + body
        var sent = 0
        while sent < request.count {
            let count = request[sent...].withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else {
                close(socket)
                throw Failure(description: "send failed: errno \(errno)")
            }
            sent += count
        }
        return try readHead(socket)
    }

    /// Parses the status line and headers; whatever body bytes came with them stay buffered.
    private static func readHead(_ socket: Int32) throws -> Response {
        let probe = Response(status: 0, headers: [:], socket: dup(socket), buffered: [])
        var raw: [UInt8] = []
        while true {
            if try !probe.fill() { throw Failure(description: "connection closed before the response's head") }
            raw = probe.drain()
            if let end = raw.firstRange(of: Array("\r\n\r\n".utf8)) {
                let head = String(decoding: raw[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
                let parts = head[0].split(separator: " ")
                guard parts.count >= 2, let status = UInt(parts[1]) else { throw Failure(description: "bad status line \(head[0])") }
                var headers: [String: String] = [:]
                for line in head.dropFirst() {
                    guard let colon = line.firstIndex(of: ":") else { continue }
                    headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
                return Response(status: status, headers: headers, socket: socket, buffered: Array(raw[end.upperBound...]))
            }
            probe.restore(raw)
        }
    }
}

extension PlainHTTPClient.Response {
    fileprivate func drain() -> [UInt8] {
        defer { buffered = [] }
        return buffered
    }

    fileprivate func restore(_ bytes: [UInt8]) { buffered = bytes }
}

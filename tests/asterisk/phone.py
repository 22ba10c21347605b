"""A SIP phone (SIPp), what it says (an RTP pcap made here), and what it hears (a capture, decoded).

- `rtp_pcap(events, ...)`: the phone's outgoing audio as a pcap of RTP packets, PCMU in 20 ms packets
  (silence, or a loud tone standing for speech) with RFC 4733 digits (payload type 101: 100 ms of event
  packets, then three end packets). SIPp replays it with `play_pcap_audio` right after the call is set up.
- `scenario(...)`: a SIPp UAC scenario: INVITE, the 401 challenge answered with the softphone account's
  password, ACK, the pcap, then either the phone's own BYE after a while or waiting for Asterisk's BYE.
- `Capture`: tcpdump on loopback inside the stack's namespace (SIP, RTP and the AudioSocket TCP stream).
- `read_pcap` / `CallView`: one call's packets from the capture: the SIP exchange, the RTP Asterisk sent to
  the phone (mu-law payloads placed by RTP timestamp), the RTP the phone sent, the AudioSocket connection.
"""

from __future__ import annotations

import audioop
import itertools
import math
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from asterisk.harness import BRIDGE_PORT, SIP_PORT, Netns, Proc, StackError

PT_PCMU = 0
PT_EVENT = 101
PACKET_MS = 20
SAMPLES = 160  # 20 ms at 8 kHz
ULAW_SILENCE = b"\xff" * SAMPLES
DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}


# ---- the phone's audio ----------------------------------------------------------------------------------


def speech_ulaw(ms: int, hz: float = 700.0, amplitude: int = 12000) -> list[bytes]:
    """A loud tone in 20 ms mu-law packets: 'the caller speaks' (RMS well above BARGE_IN_RMS)."""
    out = []
    n_total = ms * 8
    for start in range(0, n_total, SAMPLES):
        samples = [round(amplitude * math.sin(2 * math.pi * hz * (start + i) / 8000)) for i in range(SAMPLES)]
        out.append(audioop.lin2ulaw(struct.pack(f"<{SAMPLES}h", *samples), 2))
    return out


@dataclass
class Say:
    """At `at_ms` after the call is set up: a digit (`digit`) or speech for `speech_ms`."""

    at_ms: int
    digit: str | None = None
    speech_ms: int = 0


@dataclass
class Spec:
    """One call to place: the extension, what the phone says, and how the call ends (the phone's BYE after
    `hang_up_after_ms`, or, when None, waiting for Asterisk's)."""

    extension: str
    says: list[Say] = field(default_factory=list)
    send_rtp: bool = True
    rtp_ms: int = 25000
    hang_up_after_ms: int | None = None


def rtp_packets(events: list[Say], total_ms: int) -> list[tuple[float, bytes]]:
    """(time in s, RTP packet) for the whole replay: silence, speech and digits, one SSRC."""
    ssrc = 0x5EED1234
    seq = 1000
    packets: list[tuple[float, bytes]] = []
    plan: dict[int, bytes] = {}
    digits: dict[int, str] = {}
    for ev in events:
        slot = ev.at_ms // PACKET_MS
        if ev.digit is not None:
            digits[slot] = ev.digit
        for i, payload in enumerate(speech_ulaw(ev.speech_ms) if ev.speech_ms else []):
            plan[slot + i] = payload
    slot = 0
    n_slots = total_ms // PACKET_MS
    while slot < n_slots:
        ts = slot * SAMPLES
        if slot in digits:
            event = DTMF_EVENTS[digits[slot]]
            # 100 ms of event packets (durations 160..800), then three end packets; one timestamp for all
            for k in range(5):
                packets.append(
                    (
                        slot * PACKET_MS / 1000,
                        _rtp(
                            PT_EVENT,
                            seq,
                            ts,
                            ssrc,
                            marker=(k == 0),
                            payload=struct.pack("!BBH", event, 10, (k + 1) * SAMPLES),
                        ),
                    )
                )
                seq += 1
                slot += 1
            for _ in range(3):
                packets.append(
                    (
                        slot * PACKET_MS / 1000,
                        _rtp(
                            PT_EVENT,
                            seq,
                            ts,
                            ssrc,
                            marker=False,
                            payload=struct.pack("!BBH", event, 0x80 | 10, 5 * SAMPLES),
                        ),
                    )
                )
                seq += 1
            slot += 1
            continue
        packets.append((slot * PACKET_MS / 1000, _rtp(PT_PCMU, seq, ts, ssrc, marker=(slot == 0),
                                                     payload=plan.get(slot, ULAW_SILENCE))))
        seq += 1
        slot += 1
    return packets


def _rtp(pt: int, seq: int, ts: int, ssrc: int, marker: bool, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def write_pcap(path: Path, packets: list[tuple[float, bytes]], sport: int = 6000, dport: int = 10000) -> None:
    """A pcap (Ethernet, IPv4, UDP 127.0.0.1) of the RTP packets; SIPp rewrites addresses and ports."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    base = 1_700_000_000.0
    for i, (t, rtp) in enumerate(packets):
        udp = struct.pack("!HHHH", sport, dport, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0x4000, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
        ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        sec = int(base + t)
        usec = round((base + t - sec) * 1e6)
        out.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# ---- the SIPp scenario ----------------------------------------------------------------------------------

_INVITE = """\
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Softphone" <sip:softphone@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: {cseq} INVITE
      Contact: <sip:softphone@[local_ip]:[local_port]>
      Max-Forwards: 70
      {auth}
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=phone 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16
      a=ptime:20
      a=sendrecv
"""

_ACK = """\
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      Contact: <sip:softphone@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
"""


def scenario(password: str, pcap: Path | None, hang_up_after_ms: int | None, wait_bye_ms: int = 60000) -> str:
    """SIPp XML: call, replay `pcap` (if any), then BYE after `hang_up_after_ms`, or wait for Asterisk's BYE."""
    auth = f"[authentication username=softphone password={password}]"
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1" ?>',
        '<scenario name="voice-bridge phone">',
        f'<send retrans="500"><![CDATA[\n{_INVITE.format(cseq=1, auth="")}\n]]></send>',
        '<recv response="100" optional="true"/>',
        '<recv response="401" auth="true"/>',
        # the ACK of a non-2xx final response reuses the INVITE's branch
        f'<send><![CDATA[\n{_ACK.format(cseq=1).replace("branch=[branch]", "branch=[branch-1]")}\n]]></send>',
        f'<send retrans="500"><![CDATA[\n{_INVITE.format(cseq=2, auth=auth)}\n]]></send>',
        '<recv response="100" optional="true"/>',
        '<recv response="180" optional="true"/>',
        '<recv response="183" optional="true"/>',
        '<recv response="200" rtd="true" rrs="true"/>',
        f'<send><![CDATA[\n{_ACK.format(cseq=2)}\n]]></send>',
    ]
    if pcap is not None:
        parts.append(f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
    if hang_up_after_ms is not None:
        parts += [
            f'<pause milliseconds="{hang_up_after_ms}"/>',
            "<send retrans=\"500\"><![CDATA[\n"
            "      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
            "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
            "      [last_From:]\n      [last_To:]\n      Call-ID: [call_id]\n      CSeq: 3 BYE\n"
            "      Contact: <sip:softphone@[local_ip]:[local_port]>\n      Max-Forwards: 70\n"
            "      Content-Length: 0\n]]></send>",
            '<recv response="200" crlf="true"/>',
        ]
    else:
        parts += [
            f'<recv request="BYE" timeout="{wait_bye_ms}"/>',
            "<send><![CDATA[\n"
            "      SIP/2.0 200 OK\n      [last_Via:]\n      [last_From:]\n      [last_To:]\n"
            "      [last_Call-ID:]\n      [last_CSeq:]\n"
            "      Contact: <sip:softphone@[local_ip]:[local_port]>\n      Content-Length: 0\n]]></send>",
        ]
    parts.append("</scenario>")
    return "\n".join(parts) + "\n"


@dataclass
class Phone:
    """One SIPp process placing one call to `extension` from SIP port `sip_port`."""

    netns: Netns
    workdir: Path
    name: str
    extension: str
    password: str
    sip_port: int
    media_port: int
    says: list[Say] = field(default_factory=list)
    send_rtp: bool = True
    rtp_ms: int = 20000
    hang_up_after_ms: int | None = None
    proc: Proc | None = None

    def start(self) -> Phone:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pcap = None
        if self.send_rtp:
            pcap = self.workdir / f"{self.name}-says.pcap"
            write_pcap(pcap, rtp_packets(self.says, self.rtp_ms))
        xml = self.workdir / f"{self.name}.xml"
        xml.write_text(scenario(self.password, pcap, self.hang_up_after_ms))
        args = [
            "sipp", f"127.0.0.1:{SIP_PORT}", "-sf", str(xml), "-s", self.extension, "-m", "1",
            "-i", "127.0.0.1", "-p", str(self.sip_port), "-mp", str(self.media_port),
            "-nostdin", "-aa", "-timeout", "90s", "-timeout_error",
            "-trace_err", "-error_file", str(self.workdir / f"{self.name}-errors.log"),
            "-trace_msg", "-message_file", str(self.workdir / f"{self.name}-messages.log"),
        ]
        self.proc = Proc(f"sipp-{self.name}", self.netns.cmd(args), self.workdir / f"{self.name}-sipp.log")
        return self

    def wait(self, timeout: float = 90) -> int:
        """Wait for SIPp to finish its one call; its exit status (0: the scenario ran to its end)."""
        assert self.proc is not None
        try:
            return self.proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.stop(timeout=2)
            raise StackError(f"SIPp {self.name} still running after {timeout} s") from None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=3)

    def errors(self) -> str:
        path = self.workdir / f"{self.name}-errors.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


# ---- the capture ----------------------------------------------------------------------------------------


class Capture:
    """tcpdump on lo inside the namespace: all UDP (SIP, RTP) and the AudioSocket TCP port."""

    def __init__(self, netns: Netns, path: Path) -> None:
        self.path = path
        self.netns = netns
        self.proc = Proc(
            "tcpdump",
            netns.cmd(
                [
                    "tcpdump",
                    "-i",
                    "lo",
                    "-n",
                    "-U",
                    "--immediate-mode",
                    "-B",
                    "16384",
                    "-s",
                    "0",
                    "-Z",
                    "root",
                    "-w",
                    str(path),
                    f"udp or tcp port {BRIDGE_PORT}",
                ]
            ),
            path.with_suffix(".log"),
        )
        deadline = time.monotonic() + 15
        while "listening on" not in self.proc.log_path.read_text(errors="replace"):
            self.proc.check_alive()
            if time.monotonic() > deadline:
                raise StackError("tcpdump did not start")
            time.sleep(0.05)

    def stop(self) -> list[Packet]:
        """Everything captured so far: a marker datagram is sent and awaited in the file first, so no packet
        sent before this call is missing; then tcpdump is stopped."""
        marker = f"voice-bridge-capture-end-{time.monotonic_ns()}"
        self.netns.run(["bash", "-c", f"echo {marker} >/dev/udp/127.0.0.1/9"])
        deadline = time.monotonic() + 15
        while marker.encode() not in self.path.read_bytes():
            self.proc.check_alive()
            if time.monotonic() > deadline:
                raise StackError("tcpdump did not write the end marker within 15 s")
            time.sleep(0.05)
        self.proc.stop(timeout=10, sig=2)  # SIGINT: tcpdump flushes and exits
        log = self.proc.log_path.read_text(errors="replace")
        packets = read_pcap(self.path)
        dropped = [line for line in log.splitlines() if "dropped by kernel" in line]
        if dropped and not dropped[0].startswith("0 "):
            raise StackError(f"tcpdump lost packets: {dropped}")
        return packets


@dataclass
class Packet:
    t: float
    proto: str  # "udp" / "tcp"
    sport: int
    dport: int
    payload: bytes
    tcp_flags: int = 0
    tcp_seq: int = 0


def read_pcap(path: Path) -> list[Packet]:
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    else:
        endian = ">"
        magic = struct.unpack(">I", data[:4])[0]
    nano = magic == 0xA1B23C4D
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    pos = 24
    out: list[Packet] = []
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        t = sec + frac / (1e9 if nano else 1e6)
        if linktype == 1:
            if frame[12:14] != b"\x08\x00":
                continue
            ip = frame[14:]
        elif linktype == 113:  # Linux cooked
            if frame[14:16] != b"\x08\x00":
                continue
            ip = frame[16:]
        else:
            raise StackError(f"unexpected pcap link type {linktype}")
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        proto = ip[9]
        body = ip[ihl:total]
        if proto == 17:
            sport, dport, _length, _sum = struct.unpack("!HHHH", body[:8])
            out.append(Packet(t, "udp", sport, dport, body[8:]))
        elif proto == 6:
            sport, dport = struct.unpack("!HH", body[:4])
            offset = (body[12] >> 4) * 4
            seq = struct.unpack("!I", body[4:8])[0]
            out.append(Packet(t, "tcp", sport, dport, body[offset:], tcp_flags=body[13], tcp_seq=seq))
    return out


@dataclass
class Rtp:
    t: float
    pt: int
    seq: int
    ts: int
    marker: bool
    payload: bytes


def parse_rtp(p: Packet) -> Rtp | None:
    b = p.payload
    if len(b) < 12 or b[0] >> 6 != 2:
        return None
    cc = b[0] & 0x0F
    seq, ts = struct.unpack("!HI", b[2:8])
    return Rtp(p.t, b[1] & 0x7F, seq, ts, bool(b[1] & 0x80), b[12 + 4 * cc:])


FIN, SYN, RST = 0x01, 0x02, 0x04


@dataclass
class CallView:
    """One phone's call, read from the capture."""

    phone_port: int
    invite_ok_t: float          # Asterisk's 200 OK to the (authenticated) INVITE
    asterisk_rtp_port: int      # from that 200 OK's SDP
    heard: list[Rtp]            # RTP Asterisk sent to the phone (PCMU), in sequence order
    said: list[Rtp]             # RTP the phone sent
    bye_from_asterisk_t: float | None
    bye_from_phone_t: float | None
    bye_ok_t: float | None      # the 200 OK answering the phone's BYE

    def timeline(self) -> tuple[list[bytes], list[float | None]]:
        """The mu-law audio the phone received, one 160-byte frame per 20 ms placed by RTP timestamp (a lost
        packet's slot is silence), and each frame's arrival time (None for a lost one)."""
        if not self.heard:
            return [], []
        ts0 = self.heard[0].ts
        slots: dict[int, bytes] = {}
        times: dict[int, float] = {}
        for r in self.heard:
            offset = (r.ts - ts0) & 0xFFFFFFFF
            for k in range(0, len(r.payload), SAMPLES):
                slot = (offset + k) // SAMPLES
                slots[slot] = r.payload[k:k + SAMPLES].ljust(SAMPLES, b"\xff")
                times[slot] = r.t
        last = max(slots)
        return [slots.get(i, ULAW_SILENCE) for i in range(last + 1)], [times.get(i) for i in range(last + 1)]

    def inter_arrival_ms(self) -> list[float]:
        times = [r.t for r in self.heard]
        return [(b - a) * 1000 for a, b in itertools.pairwise(times)]

    def sent_times(self, pt: int) -> list[float]:
        return [r.t for r in self.said if r.pt == pt]


def call_view(packets: list[Packet], phone_port: int) -> CallView:
    """The call the phone on SIP port `phone_port` placed, from all the captured packets."""
    ok_t = None
    rtp_port = None
    bye_a = bye_p = bye_ok = None
    for p in packets:
        if p.proto != "udp" or SIP_PORT not in (p.sport, p.dport):
            continue
        text = p.payload.decode("latin-1", errors="replace")
        head = text.split("\r\n", 1)[0]
        cseq = _header(text, "CSeq")
        if p.sport == SIP_PORT and p.dport == phone_port:
            if head.startswith("SIP/2.0 200") and cseq.endswith("INVITE") and "m=audio" in text and ok_t is None:
                ok_t = p.t
                rtp_port = int(text.split("m=audio ", 1)[1].split()[0])
            elif head.startswith("BYE ") and bye_a is None:
                bye_a = p.t
            elif head.startswith("SIP/2.0 200") and cseq.endswith("BYE") and bye_p is not None and bye_ok is None:
                bye_ok = p.t
        elif p.sport == phone_port and p.dport == SIP_PORT and head.startswith("BYE ") and bye_p is None:
            bye_p = p.t
    if ok_t is None or rtp_port is None:
        raise StackError(f"no 200 OK with SDP for the phone on port {phone_port} in the capture")
    heard, said = [], []
    for p in packets:
        if p.proto != "udp" or p.t < ok_t:
            continue
        if p.sport == rtp_port and p.dport != SIP_PORT:
            r = parse_rtp(p)
            if r is not None and r.pt == PT_PCMU:
                heard.append(r)
        elif p.dport == rtp_port:
            r = parse_rtp(p)
            if r is not None:
                said.append(r)
    if heard:  # sequence order (a call is far shorter than 65536 packets; the bias allows reordering)
        seq0 = heard[0].seq
        heard.sort(key=lambda r: (r.seq - seq0 + 0x8000) & 0xFFFF)
    return CallView(phone_port, ok_t, rtp_port, heard, said, bye_a, bye_p, bye_ok)


def _header(text: str, name: str) -> str:
    for line in text.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def audiosocket_connections(packets: list[Packet]) -> list[dict[str, float | int | None]]:
    """Each AudioSocket TCP connection in the capture: Asterisk's port, when it opened, when each side closed
    (FIN or RST), and the last time the bridge sent a payload."""
    conns: dict[int, dict[str, float | int | None]] = {}
    for p in packets:
        if p.proto != "tcp":
            continue
        if p.dport == BRIDGE_PORT:
            port, from_bridge = p.sport, False
        elif p.sport == BRIDGE_PORT:
            port, from_bridge = p.dport, True
        else:
            continue
        c = conns.setdefault(port, {"port": port, "syn": None, "asterisk_close": None, "bridge_close": None,
                                    "asterisk_reset": None, "bridge_last_payload": None,
                                    "bridge_payloads_after_asterisk_close": 0})
        if p.tcp_flags & SYN and not from_bridge and c["syn"] is None:
            c["syn"] = p.t
        if p.tcp_flags & (FIN | RST):
            key = "bridge_close" if from_bridge else "asterisk_close"
            if c[key] is None:
                c[key] = p.t
        if p.tcp_flags & RST and not from_bridge and c["asterisk_reset"] is None:
            c["asterisk_reset"] = p.t
        if from_bridge and p.payload:
            c["bridge_last_payload"] = p.t
            if c["asterisk_close"] is not None:
                c["bridge_payloads_after_asterisk_close"] += 1  # type: ignore[operator]
    return list(conns.values())


def audiosocket_messages(packets: list[Packet], asterisk_port: int, from_bridge: bool) -> list[tuple[int, bytes]]:
    """(kind, payload) of every AudioSocket message on the connection from Asterisk's `asterisk_port`, in one
    direction, reassembled from the captured TCP segments."""
    segments: dict[int, bytes] = {}
    for p in packets:
        if p.proto != "tcp" or not p.payload:
            continue
        if (from_bridge and p.sport == BRIDGE_PORT and p.dport == asterisk_port) or (
                not from_bridge and p.sport == asterisk_port and p.dport == BRIDGE_PORT):
            segments.setdefault(p.tcp_seq, p.payload)
    if not segments:
        return []
    stream = bytearray()
    seq0 = min(segments)
    for seq in sorted(segments):
        offset = (seq - seq0) & 0xFFFFFFFF
        if offset > len(stream):
            stream += bytes(offset - len(stream))  # a segment missing from the capture
        stream[offset:offset + len(segments[seq])] = segments[seq]
    messages, pos = [], 0
    while pos + 3 <= len(stream):
        kind, length = stream[pos], struct.unpack("!H", stream[pos + 1:pos + 3])[0]
        messages.append((kind, bytes(stream[pos + 3:pos + 3 + length])))
        pos += 3 + length
    return messages


def bridge_frames(packets: list[Packet], asterisk_port: int) -> list[bytes]:
    """The audio (kind 0x10) the bridge sent on one AudioSocket connection (for diagnosis: what the bridge
    sent against what the phone heard)."""
    return [payload for kind, payload in audiosocket_messages(packets, asterisk_port, True) if kind == 0x10]


def call_uuids(packets: list[Packet]) -> list[str]:
    """The UUID (the first message, kind 0x01) Asterisk sent on each AudioSocket connection in the capture."""
    import uuid

    out = []
    for conn in audiosocket_connections(packets):
        messages = audiosocket_messages(packets, int(conn["port"]), False)
        if messages and messages[0][0] == 0x01 and len(messages[0][1]) == 16:
            out.append(str(uuid.UUID(bytes=messages[0][1])))
    return out

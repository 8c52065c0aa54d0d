#!/usr/bin/python3
"""Scores chat replies with the reward-scoring service, as a team that serves its own reward model would call it
(Debian's python3-grpcio and python3-protobuf; message classes generated from protos/ with Debian's protoc).

Each reply is scored as the assistant's turn after the conversation, rendered with the reward model's own chat
template and tokenizer on the server. The pairs go once through Score (one batch) and once through ScoreStream (one
request per pair on one stream), and the two answers must agree.

  /usr/bin/python3 tools/examples/score_chat.py --reward 127.0.0.1:50053 \\
      --system "You are terse." --user "What is 2+2?" --reply "4" --reply "Four, I think." [--token T]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import grpc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_messages():
    out = tempfile.mkdtemp(prefix="rlhf_py_")
    protos = [os.path.join("rlhf", "v1", name) for name in ("common.proto", "reward.proto")]
    subprocess.run(["protoc", "-I", os.path.join(REPO, "protos"), "--python_out", out] + protos, check=True)
    sys.path.insert(0, out)
    from rlhf.v1 import common_pb2, reward_pb2  # noqa: E402
    return common_pb2, reward_pb2


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward", default="127.0.0.1:50053", help="host:port of the reward-scoring service")
    parser.add_argument("--system", default="", help="system message; empty: none")
    parser.add_argument("--user", required=True, help="the user's message")
    parser.add_argument("--reply", action="append", required=True, help="an assistant reply to score (repeatable)")
    parser.add_argument("--token", default="", help="bearer token, when the service requires one")
    args = parser.parse_args()
    common_pb2, reward_pb2 = load_messages()
    metadata = [("authorization", "Bearer " + args.token)] if args.token else None
    channel = grpc.insecure_channel(args.reward)

    info = channel.unary_unary("/rlhf.v1.RewardScoringService/GetModelInfo",
                               request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=common_pb2.ModelInfo.FromString)(
        common_pb2.GetModelInfoRequest(), timeout=30, metadata=metadata)
    print(f"reward model {info.model_id.name} v{info.model_id.version}: {info.config.model_type}, "
          f"{info.config.n_layer} layers, vocab {info.tokenizer.vocab_size}, "
          f"chat template {'yes' if info.tokenizer.chat_template else 'no'}")

    def item(reply):
        it = reward_pb2.ScoreItem()
        if args.system:
            it.prompt.messages.messages.add(role="system", content=args.system)
        it.prompt.messages.messages.add(role="user", content=args.user)
        it.response.text = reply  # scored as the assistant turn, its end-of-turn token appended by the server
        return it

    score = channel.unary_unary("/rlhf.v1.RewardScoringService/Score",
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=reward_pb2.ScoreResponse.FromString)
    batch = score(reward_pb2.ScoreRequest(request_id="score-chat", items=[item(r) for r in args.reply]),
                  timeout=30, metadata=metadata)

    stream = channel.stream_stream("/rlhf.v1.RewardScoringService/ScoreStream",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=reward_pb2.ScoreResponse.FromString)
    requests = (reward_pb2.ScoreRequest(request_id=f"reply-{i}", items=[item(r)]) for i, r in enumerate(args.reply))
    streamed = []
    for answer in stream(requests, timeout=30, metadata=metadata):
        if answer.HasField("error"):
            sys.exit(f"{answer.request_id}: {answer.error.message}")
        streamed.append(answer.scores[0])

    for reply, a, b in zip(args.reply, batch.scores, streamed):
        print(f"{a:+.4f}  {reply!r}")
        if abs(a - b) > 1e-5:
            sys.exit(f"Score and ScoreStream disagree on {reply!r}: {a} vs {b}")
    print(f"(scores include the normalisation bias {batch.normalization_bias:+.4f}; "
          "Score and ScoreStream agree)")


if __name__ == "__main__":
    main()

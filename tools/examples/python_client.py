#!/usr/bin/python3
"""Calls the policy-generation and reference-logprob services from Python (Debian's python3-grpcio and
python3-protobuf), and, with --reward, scores the samples with the reward-scoring service. Message classes are
generated from protos/ with Debian's protoc; the calls use grpcio's generic unary API, so no gRPC code generator is
needed.

  /usr/bin/python3 tools/examples/python_client.py --generation 127.0.0.1:50051 --reference 127.0.0.1:50052 \
      [--reward 127.0.0.1:50053]
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
    names = ("common.proto", "generation.proto", "reference.proto", "reward.proto")
    protos = [os.path.join("rlhf", "v1", name) for name in names]
    subprocess.run(["protoc", "-I", os.path.join(REPO, "protos"), "--python_out", out] + protos, check=True)
    sys.path.insert(0, out)
    from rlhf.v1 import generation_pb2, reference_pb2, reward_pb2  # noqa: E402
    return generation_pb2, reference_pb2, reward_pb2


def unary(channel, method, response_class):
    return channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=response_class.FromString)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generation", default="127.0.0.1:50051")
    parser.add_argument("--reference", default="127.0.0.1:50052")
    parser.add_argument("--reward", default="", help="reward-scoring address; empty skips scoring")
    parser.add_argument("--prompt", default="Hello")
    parser.add_argument("--token", default="", help="bearer token, when the services require one")
    args = parser.parse_args()
    generation_pb2, reference_pb2, reward_pb2 = load_messages()
    metadata = [("authorization", "Bearer " + args.token)] if args.token else None

    generate = unary(grpc.insecure_channel(args.generation), "/rlhf.v1.PolicyGenerationService/Generate",
                     generation_pb2.GenerateResponse)
    request = generation_pb2.GenerateRequest(num_samples=2)
    request.prompts.add().text = args.prompt
    request.sampling.max_new_tokens = 16
    request.sampling.seed = 7
    generated = generate(request, timeout=30, metadata=metadata)
    print(f"model {generated.model_id.name} v{generated.model_id.version}")
    result = generated.results[0]

    log_probs = unary(grpc.insecure_channel(args.reference), "/rlhf.v1.ReferenceLogprobService/LogProbs",
                      reference_pb2.LogProbsResponse)
    scoring = reference_pb2.LogProbsRequest()
    for completion in result.completions:
        sequence = scoring.sequences.add()
        sequence.prompt_token_ids.extend(result.prompt_token_ids)
        sequence.response_token_ids.extend(completion.token_ids)
    scored = log_probs(scoring, timeout=30, metadata=metadata)
    for completion, reference in zip(result.completions, scored.results):
        worst = max(abs(a - b) for a, b in zip(completion.logprobs, reference.logprobs))
        print(f"{len(completion.token_ids)} tokens, finish {completion.finish_reason}, "
              f"log-likelihood {sum(completion.logprobs):.3f} (reference {reference.sum_logprob:.3f}, "
              f"max difference {worst:.1e}): {completion.text!r}")

    if args.reward:
        score = unary(grpc.insecure_channel(args.reward), "/rlhf.v1.RewardScoringService/Score",
                      reward_pb2.ScoreResponse)
        request = reward_pb2.ScoreRequest(request_id="python-client")
        for completion in result.completions:
            item = request.items.add()
            item.prompt.token_ids.ids.extend(result.prompt_token_ids)
            item.response.token_ids.ids.extend(completion.token_ids)  # as sampled, stop token included
        scored = score(request, timeout=30, metadata=metadata)
        print(f"reward model {scored.model_id.name} v{scored.model_id.version} "
              f"(normalization bias {scored.normalization_bias:.3f}): "
              + ", ".join(f"{value:.3f}" for value in scored.scores))


if __name__ == "__main__":
    main()

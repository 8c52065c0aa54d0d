# cmake -DPROTOC=... -DMESSAGE=pkg.Msg -DPROTO_DIR=<src>/protos -DSOURCE_DIR=<src> -DIN=seed.txtpb -DOUT=seed.bin
#       -P encode_seed.cmake
# protoc --encode: text format in, binary out. Every service's protos and tests/fuzz/fuzz_inputs.proto are given, so
# any request message is known. A seed that does not parse fails the build, naming the file.
get_filename_component(out_dir "${OUT}" DIRECTORY)
file(MAKE_DIRECTORY "${out_dir}")
execute_process(
  COMMAND "${PROTOC}" "-I${PROTO_DIR}" "-I${SOURCE_DIR}" "--encode=${MESSAGE}" tests/fuzz/fuzz_inputs.proto
          rlhf/v1/orchestrator.proto rlhf/v1/reference.proto rlhf/v1/reward.proto
  WORKING_DIRECTORY "${SOURCE_DIR}"
  INPUT_FILE "${IN}" OUTPUT_FILE "${OUT}" ERROR_VARIABLE error RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  file(REMOVE "${OUT}")
  message(FATAL_ERROR "cannot encode ${IN} as ${MESSAGE}: ${error}")
endif()

# Install rules (BIGARRAY_INSTALL, ON when bigarray is the top-level project): `make install`,
# cmake --install build [--prefix DIR]. Everything is placed relative to the prefix given at
# install time, so the prefix configured at build time does not matter:
#   include/bigarray/*.h                  the public headers (libbigarray/include/bigarray)
#   lib/libbigarray.so.X.Y.Z, .so.X.Y, .so, lib/libbigarray.a
#   lib/cmake/bigarray/                   find_package(bigarray CONFIG): bigarray::bigarray
#                                         (shared), bigarray::bigarray_static
#   lib/pkgconfig/bigarray.pc             pkg-config bigarray (--static for the archive)
#   bin/bigarray                          the command-line tool
#   lib/python3.X/dist-packages/bigarray/ the Python package (BIGARRAY_PYTHON_INSTALL_DIR)
# (lib is CMAKE_INSTALL_LIBDIR: lib/<multiarch> when configured with the prefix /usr.)
include(CMakePackageConfigHelpers)
set(BIGARRAY_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/bigarray)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/libbigarray/include/bigarray DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        COMPONENT dev FILES_MATCHING PATTERN "*.h")
install(TARGETS bigarray_shared bigarray_static EXPORT bigarray-targets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT lib NAMELINK_COMPONENT dev
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(EXPORT bigarray-targets NAMESPACE bigarray:: DESTINATION ${BIGARRAY_CMAKE_DIR} COMPONENT dev)

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/bigarray-config.cmake.in ${PROJECT_BINARY_DIR}/bigarray-config.cmake
                              INSTALL_DESTINATION ${BIGARRAY_CMAKE_DIR})
# 0.x: a minor version may break compatibility, so find_package(bigarray 0.1) takes 0.1.* only.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/bigarray-config-version.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/bigarray-config.cmake ${PROJECT_BINARY_DIR}/bigarray-config-version.cmake
        DESTINATION ${BIGARRAY_CMAKE_DIR} COMPONENT dev)

# The .pc file finds the prefix from its own location (${pcfiledir}), so that it is right for
# whatever prefix cmake --install is given.
file(RELATIVE_PATH BIGARRAY_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" BIGARRAY_PC_TO_PREFIX "${BIGARRAY_PC_TO_PREFIX}")
set(BIGARRAY_PC_REQUIRES_PRIVATE "lmdb libxxhash")
if(BIGARRAY_POSTGRES)
  string(APPEND BIGARRAY_PC_REQUIRES_PRIVATE " libpq")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/bigarray.pc.in ${PROJECT_BINARY_DIR}/bigarray.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/bigarray.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

if(TARGET bigarray-cli)
  install(TARGETS bigarray-cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT cli)
endif()
if(TARGET bigarray_python)
  install(TARGETS bigarray_python LIBRARY DESTINATION ${BIGARRAY_PYTHON_INSTALL_DIR}/bigarray COMPONENT python)
  install(FILES ${BIGARRAY_PYTHON_FILES} DESTINATION ${BIGARRAY_PYTHON_INSTALL_DIR}/bigarray COMPONENT python)
endif()

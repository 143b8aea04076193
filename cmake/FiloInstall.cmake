# make install: headers, libfilo, a CMake package (find_package(filo)) and a pkg-config file.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS filo EXPORT filoTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/filo DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
install(EXPORT filoTargets NAMESPACE filo:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/filo)

configure_package_config_file(${CMAKE_CURRENT_SOURCE_DIR}/cmake/filoConfig.cmake.in
                              ${CMAKE_CURRENT_BINARY_DIR}/filoConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/filo)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/filoConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/filoConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/filoConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/filo)

configure_file(${CMAKE_CURRENT_SOURCE_DIR}/cmake/filo.pc.in ${CMAKE_CURRENT_BINARY_DIR}/filo.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/filo.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
